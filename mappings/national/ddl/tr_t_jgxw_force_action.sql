-- 行政强制行为 (coercion): the national 互联网+监管 front-end table, generated from mappings/national-coercion.toml
CREATE TABLE tr_t_jgxw_force_action (
    cd_id VARCHAR(64) NOT NULL PRIMARY KEY, -- 主键（部门编码主键）: department code + digest of key and version
    cd_time TIMESTAMP NOT NULL, -- 插入时间
    cd_source VARCHAR(32) NOT NULL, -- 来源: 省份区划代码 + 部门编码
    cd_batch VARCHAR(13) NOT NULL, -- 批次号: YYYYMMDD + 5-digit sequence of the day
    cd_operation CHAR(1) NOT NULL, -- i insert / u update / d delete
    record_unique_identity VARCHAR(256) NOT NULL, -- 记录唯一标识: the gateway's record key
    supervise_item_implement_code VARCHAR(14), -- 监管事项目录编码
    supervise_item_check_icode VARCHAR(50), -- 监管事项检查实施清单编码
    force_action_name VARCHAR(200), -- 强制行为名称
    force_action_code VARCHAR(50), -- 强制行为编号
    implement_institution VARCHAR(100), -- 实施机构
    implement_institution_code VARCHAR(20), -- 实施机构编码
    entrust_dept VARCHAR(100), -- 受委托部门
    entrust_dept_code VARCHAR(20), -- 受委托部门编码
    check_action_code VARCHAR(50), -- 检查行为编号
    supervise_object_type VARCHAR(100), -- 监管对象类型
    supervise_object VARCHAR(200), -- 监管对象
    administrative_cp VARCHAR(200), -- 行政相对人名称
    administrative_cp_na VARCHAR(100), -- 行政相对人性质
    administrative_cp_ce_type VARCHAR(100), -- 行政相对人证件类型
    administrative_cp_ui_code VARCHAR(20), -- 行政相对人编码
    address_registered VARCHAR(400), -- 注册地址
    address_operating VARCHAR(400), -- 经营地址
    area_number VARCHAR(6), -- 行政区划代码
    force_basis VARCHAR(4000), -- 强制依据
    force_doc_no VARCHAR(128), -- 强制决定书号
    force_type VARCHAR(100), -- 行政强制种类
    force_measure_type VARCHAR(100), -- 强制措施类型
    force_execute_type VARCHAR(100), -- 强制执行类型
    force_result VARCHAR(2000), -- 强制结果
    start_date DATE, -- 起始时间
    end_date DATE, -- 截止时间
    extend_period VARCHAR(200), -- 延长期限
    submitted_date DATE, -- 报送时间
    submitted_personnel VARCHAR(50), -- 报送人员
    deal_status VARCHAR(2), -- written by the national side: NULL/0 waiting, 1 processed, 2 rejected
    deal_message VARCHAR(2000), -- written by the national side: why a row was rejected
    deal_time TIMESTAMP  -- written by the national side: when it processed the row
);
CREATE INDEX ix_tr_t_jgxw_force_action_identity ON tr_t_jgxw_force_action (record_unique_identity);
CREATE INDEX ix_tr_t_jgxw_force_action_status ON tr_t_jgxw_force_action (cd_batch, deal_status);
