-- Industry and Commerce (工商行政管理局), in its own MariaDB/MySQL: the staging table the hub
-- takes enterprise registrations from. The hub needs SELECT and UPDATE on it.
CREATE TABLE IF NOT EXISTS qydj_staging (
    id          BIGINT AUTO_INCREMENT PRIMARY KEY,
    status      VARCHAR(16) NOT NULL DEFAULT 'new',
    receipt     TEXT,
    problem     TEXT,
    tyshxydm    VARCHAR(18) NOT NULL,   -- 统一社会信用代码
    qymc        VARCHAR(200) NOT NULL,  -- 企业名称
    qylx        VARCHAR(40) NOT NULL,   -- 企业类型 (the schema's codes)
    fddbr_xm    VARCHAR(64) NOT NULL,   -- 法定代表人姓名
    fddbr_sfzh  VARCHAR(18) NOT NULL,   -- 法定代表人身份证号
    zczb        DECIMAL(18, 2),         -- 注册资本 (万元)
    clrq        DATE NOT NULL,          -- 成立日期
    zs          VARCHAR(200) NOT NULL,  -- 住所
    jyfw        TEXT,                   -- 经营范围
    djzt        VARCHAR(16) NOT NULL,   -- 登记状态: active | revoked | cancelled
    ajbh        VARCHAR(64),            -- 案件编号: the joint case this licence answers, if one
    hjbh        VARCHAR(64),            -- 环节编号: its step (with ajbh, from the case's feed event)
    KEY qydj_staging_status (status, id)
) DEFAULT CHARSET = utf8mb4;
