-- State Tax (国家税务局), in its own PostgreSQL: the tables config/conghua.toml connects.
-- The hub needs SELECT, UPDATE on the staging table and INSERT on the exchange table, nothing else:
--   GRANT SELECT, UPDATE ON swdj_staging TO conghua_hub; GRANT INSERT ON qydj_exchange TO conghua_hub;

-- 税务登记 staging: State Tax's system inserts rows with status 'new'; the hub publishes each as
-- a tax-registration and marks it 'taken' (with the receipt) or 'rejected' (with the problem).
CREATE TABLE IF NOT EXISTS swdj_staging (
    id      bigserial PRIMARY KEY,
    status  text NOT NULL DEFAULT 'new' CHECK (status IN ('new', 'taken', 'rejected')),
    receipt text,
    problem text,
    djxh    text NOT NULL,          -- 登记序号 registration number
    nsrsbh  text NOT NULL,          -- 纳税人识别号 taxpayer id (credit code or resident id)
    nsrmc   text NOT NULL,          -- 纳税人名称 taxpayer name
    nsrlx   text NOT NULL,          -- 纳税人类型: qy | gtgsh | gr
    djrq    date NOT NULL,          -- 登记日期
    swjg    text NOT NULL,          -- 税务机关
    zt      text NOT NULL,          -- 状态: zc | fz | zx
    ajbh    text,                   -- 案件编号: the joint case this registration answers, if one
    hjbh    text                    -- 环节编号: its step (with ajbh, from ajsl_exchange)
);
CREATE INDEX IF NOT EXISTS swdj_staging_new ON swdj_staging (id) WHERE status = 'new';

-- 企业登记 exchange: enterprise registrations from Industry and Commerce, one row per event.
CREATE TABLE IF NOT EXISTS qydj_exchange (
    seq         bigserial,
    event_id    text PRIMARY KEY,   -- the hub's event id: a redelivery inserts nothing
    nsrsbh      text NOT NULL,      -- 统一社会信用代码
    nsrmc       text NOT NULL,      -- 企业名称
    qylx        text,               -- 企业类型
    fddbrxm     text,               -- 法定代表人姓名
    clrq        date,               -- 成立日期
    dz          text,               -- 住所
    zt          text,               -- 登记状态
    received_at timestamptz NOT NULL DEFAULT now()
);

-- 案件受理 exchange: the joint cases' events addressed to State Tax (a step ready for it, late,
-- or a case stopped), one row per event. A step's row carries the business licence's data the
-- taxpayer registration needs. State Tax answers with a swdj_staging row carrying the row's
-- ajbh and hjbh (or through the API, with the header Hub-Case-Step: AJBH/HJBH).
CREATE TABLE IF NOT EXISTS ajsl_exchange (
    seq         bigserial,
    event_id    text PRIMARY KEY,   -- the hub's event id: a redelivery inserts nothing
    ajbh        text NOT NULL,      -- 案件编号 case id
    hjbh        text NOT NULL,      -- 环节编号 step id
    sjlx        text NOT NULL,      -- 事件类型: step.ready | step.overdue | refused
    blqx        date,               -- 办理期限 last day of the time limit
    nsrsbh      text,               -- 统一社会信用代码 (from the licence)
    nsrmc       text,               -- 企业名称
    fddbrxm     text,               -- 法定代表人姓名
    dz          text,               -- 住所
    received_at timestamptz NOT NULL DEFAULT now()
);
