-- 行政处罚行为 (enforcement): the national 互联网+监管 front-end table, generated from mappings/national-enforcement.toml
CREATE TABLE tr_t_jgxw_punish_action (
    cd_id VARCHAR(64) NOT NULL PRIMARY KEY, -- 主键（部门编码主键）: department code + digest of key and version
    cd_time TIMESTAMP NOT NULL, -- 插入时间
    cd_source VARCHAR(32) NOT NULL, -- 来源: 省份区划代码 + 部门编码
    cd_batch VARCHAR(13) NOT NULL, -- 批次号: YYYYMMDD + 5-digit sequence of the day
    cd_operation CHAR(1) NOT NULL, -- i insert / u update / d delete
    record_unique_identity VARCHAR(256) NOT NULL, -- 记录唯一标识: the gateway's record key
    supervise_item_implement_code VARCHAR(14), -- 监管事项目录编码
    supervise_item_check_icode VARCHAR(50), -- 监管事项检查实施清单编码
    punish_action_name VARCHAR(200), -- 处罚行为名称
    punish_action_code VARCHAR(50), -- 处罚行为编号
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
    case_source VARCHAR(100), -- 案件来源
    illegal_fact VARCHAR(4000), -- 违法事实
    punish_basis VARCHAR(4000), -- 处罚依据
    punish_procedure VARCHAR(100), -- 处罚程序
    is_hearing VARCHAR(100), -- 是否听证
    register_date DATE, -- 处罚立案时间
    is_criminal VARCHAR(100), -- 是否涉刑案件
    is_major VARCHAR(100), -- 是否重大案件
    is_legal_review VARCHAR(100), -- 是否法制审核
    legal_review_date DATE, -- 法制审核日期
    legal_review_opinion VARCHAR(2000), -- 法制审核意见
    is_collective VARCHAR(100), -- 是否集体讨论
    collective_date DATE, -- 集体讨论日期
    collective_conclusion VARCHAR(2000), -- 集体讨论结论
    punish_doc_no VARCHAR(128), -- 处罚文书号
    punish_date DATE, -- 作出行政处罚决定日期
    punish_type VARCHAR(500), -- 处罚种类
    fine_amount DECIMAL(18,2), -- 罚款金额（元）
    punish_result VARCHAR(2000), -- 处罚结果
    administrative_review VARCHAR(500), -- 行政复议
    administrative_litigation VARCHAR(500), -- 行政诉讼
    execute_mode VARCHAR(200), -- 结案情况—执行方式
    execute_result VARCHAR(500), -- 结案情况—执行结果
    no_punish VARCHAR(500), -- 结案情况—不予行政处罚
    close_date DATE, -- 结案日期
    paid_fine_amount DECIMAL(18,2), -- 结案实缴罚款金额（元）
    other_handling VARCHAR(2000), -- 其他处理情况
    transfer_date DATE, -- 移送时间
    submitted_date DATE, -- 报送时间
    submitted_personnel VARCHAR(50), -- 报送人员
    deal_status VARCHAR(2), -- written by the national side: NULL/0 waiting, 1 processed, 2 rejected
    deal_message VARCHAR(2000), -- written by the national side: why a row was rejected
    deal_time TIMESTAMP  -- written by the national side: when it processed the row
);
CREATE INDEX ix_tr_t_jgxw_punish_action_identity ON tr_t_jgxw_punish_action (record_unique_identity);
CREATE INDEX ix_tr_t_jgxw_punish_action_status ON tr_t_jgxw_punish_action (cd_batch, deal_status);
