-- Civil Affairs (民政局), in its own MariaDB/MySQL: tax registrations it receives for the
-- minimum-living-allowance review, one row per event. The hub needs INSERT on it.
CREATE TABLE IF NOT EXISTS swdj_exchange (
    seq         BIGINT AUTO_INCREMENT UNIQUE,
    event_id    VARCHAR(100) PRIMARY KEY,  -- the hub's event id: a redelivery inserts nothing
    djxh        VARCHAR(40) NOT NULL,      -- 登记序号
    nsrsbh      VARCHAR(18) NOT NULL,      -- 纳税人识别号
    nsrlx       VARCHAR(40),               -- 纳税人类型
    zt          VARCHAR(16),               -- 状态
    received_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
) DEFAULT CHARSET = utf8mb4;
