-- 其他行为 (other_action): the national 互联网+监管 front-end table, generated from mappings/national-other-action.toml
CREATE TABLE tr_t_jgxw_other_action (
    cd_id VARCHAR(64) NOT NULL PRIMARY KEY, -- 主键（部门编码主键）: department code + digest of key and version
    cd_time TIMESTAMP NOT NULL, -- 插入时间
    cd_source VARCHAR(32) NOT NULL, -- 来源: 省份区划代码 + 部门编码
    cd_batch VARCHAR(13) NOT NULL, -- 批次号: YYYYMMDD + 5-digit sequence of the day
    cd_operation CHAR(1) NOT NULL, -- i insert / u update / d delete
    record_unique_identity VARCHAR(256) NOT NULL, -- 记录唯一标识: the gateway's record key
    supervise_item_implement_code VARCHAR(14), -- 监管事项目录编码
    supervise_item_check_icode VARCHAR(50), -- 监管事项检查实施清单编码
    other_action_name VARCHAR(200), -- 行为名称
    other_action_code VARCHAR(50), -- 行为编号
    implement_institution VARCHAR(100), -- 实施机构
    implement_institution_code VARCHAR(20), -- 实施机构编码
    entrust_dept VARCHAR(100), -- 受委托部门
    entrust_dept_code VARCHAR(20), -- 受委托部门编码
    supervise_object_type VARCHAR(100), -- 监管对象类型
    supervise_object VARCHAR(200), -- 监管对象
    administrative_cp VARCHAR(200), -- 行政相对人名称
    administrative_cp_na VARCHAR(100), -- 行政相对人性质
    administrative_cp_ce_type VARCHAR(100), -- 行政相对人证件类型
    administrative_cp_ui_code VARCHAR(20), -- 行政相对人编码
    address_registered VARCHAR(400), -- 注册地址
    address_operating VARCHAR(400), -- 经营地址
    area_number VARCHAR(6), -- 行政区划代码
    item_source VARCHAR(200), -- 事项来源
    supervise_measure VARCHAR(2000), -- 监管措施
    close_situation VARCHAR(2000), -- 结案情况
    start_date DATE, -- 开始时间
    end_date DATE, -- 结束时间
    submitted_date DATE, -- 报送时间
    submitted_personnel VARCHAR(50), -- 报送人员
    deal_status VARCHAR(2), -- written by the national side: NULL/0 waiting, 1 processed, 2 rejected
    deal_message VARCHAR(2000), -- written by the national side: why a row was rejected
    deal_time TIMESTAMP  -- written by the national side: when it processed the row
);
CREATE INDEX ix_tr_t_jgxw_other_action_identity ON tr_t_jgxw_other_action (record_unique_identity);
CREATE INDEX ix_tr_t_jgxw_other_action_status ON tr_t_jgxw_other_action (cd_batch, deal_status);
