"""The national 互联网+监管 system's supervision actions (domain.md §5).

行政检查行为, 行政处罚行为, 行政强制行为 and 其他行为: field tables from JGXW-RULES and the TROY-SYNC DDL of
``tr_t_jgxw_check_action``: each label carries the
Chinese name and the front-end table's column. The national dictionaries (监管对象类型, 检查形式, 检查类别, 检查方式,
检查结果, 案件来源, …) were not found in any source: the value lists below are ours, in plain Chinese, and the
outbound mappings (``mappings/national-*.toml``) translate them to the national codes ops fill in.

Every action names its implementing body: the natural key is the action's code and the body's code. Validation
(in :mod:`gateway.domain.datasets`): 监管事项目录编码 14 digits, 检查实施清单编码 a USCC and a 19th character 1–5,
行政区划代码 in the GB/T 2260 table, 行政相对人编码 a USCC or an ID number by its 证件类型, 报送时间 not before the
action's date, and a 处罚行为 names the 检查行为 it came from.
"""

from __future__ import annotations

from gateway.domain.fields import Dataset, FieldSpec

USCC_DOCUMENT = "统一社会信用代码"
ORGANISATION, NATURAL_PERSON, INDIVIDUAL_BUSINESS = "法人及非法人组织", "自然人", "个体工商户"
SUBJECT_NATURES = (ORGANISATION, NATURAL_PERSON, INDIVIDUAL_BUSINESS)
SUBJECT_DOCUMENTS = (USCC_DOCUMENT, "身份证", "护照号", "港澳居民来往内地通行证", "台湾居民来往大陆通行证",
                     "外国人永久居留身份证", "港澳台居民居住证")
OBJECT_TYPES = ("企业", "个体工商户", "农民专业合作社", "事业单位", "社会组织", "自然人", "其他")
CHECK_FORMS = ("双随机抽查", "日常检查", "专项检查", "重点检查", "投诉举报核查", "其他")
CHECK_TYPES = ("现场检查", "非现场检查", "书面检查", "其他")
CHECK_MODES = ("单部门检查", "联合检查", "委托检查", "其他")
CHECK_RESULTS = ("未发现问题", "发现问题已责令整改", "发现问题已立案", "未发现经营", "其他")
YES_NO = ("是", "否")
CASE_SOURCES = ("监督检查", "投诉举报", "上级交办", "其他部门移送", "媒体曝光", "其他")
PROCEDURES = ("简易程序", "普通程序")
# 行政处罚法 (2021) 第九条
PENALTY_KINDS = ("警告", "通报批评", "罚款", "没收违法所得", "没收非法财物", "暂扣许可证件", "降低资质等级",
                 "吊销许可证件", "限制开展生产经营活动", "责令停产停业", "责令关闭", "限制从业", "行政拘留", "其他")
COERCION_KINDS = ("行政强制措施", "行政强制执行")
# 行政强制法 第九条 (措施) and 第十二条 (执行)
COERCION_MEASURES = ("限制公民人身自由", "查封场所、设施或者财物", "扣押财物", "冻结存款、汇款", "其他")
COERCION_EXECUTIONS = ("加处罚款或者滞纳金", "划拨存款、汇款", "拍卖或者依法处理查封、扣押的场所、设施或者财物",
                       "排除妨碍、恢复原状", "代履行", "其他")


def _head(action: str, column: str) -> tuple[FieldSpec, ...]:
    """The fields every action shares before its own: the 监管事项, the action and the implementing body."""
    return (
        FieldSpec("item_code", "监管事项目录编码 supervise_item_implement_code", required=True, max_len=14,
                  check="item_code"),
        FieldSpec("check_list_code", "监管事项检查实施清单编码 supervise_item_check_icode", required=True, max_len=50,
                  check="check_icode"),
        FieldSpec("action_name", f"{action}名称 {column}_name", required=True, max_len=200),
        FieldSpec("action_code", f"{action}编号 {column}_code", required=True, max_len=50),
        FieldSpec("implementing_body", "实施机构 implement_institution", required=True, max_len=100),
        FieldSpec("implementing_body_code", "实施机构编码 implement_institution_code", required=True, max_len=20),
        FieldSpec("entrusted_dept", "受委托部门 entrust_dept", max_len=100),
        FieldSpec("entrusted_dept_code", "受委托部门编码 entrust_dept_code", max_len=20),
    )


_SUBJECT = (
    FieldSpec("object_type", "监管对象类型 supervise_object_type", kind="code", codes=OBJECT_TYPES),
    FieldSpec("supervised_object", "监管对象 supervise_object", required=True, max_len=200),
    FieldSpec("subject_name", "行政相对人名称 administrative_cp", required=True, max_len=200),
    FieldSpec("subject_nature", "行政相对人性质 administrative_cp_na", kind="code", required=True,
              codes=SUBJECT_NATURES),
    FieldSpec("subject_doc_type", "行政相对人证件类型 administrative_cp_ce_type", kind="code", required=True,
              codes=SUBJECT_DOCUMENTS),
    FieldSpec("subject_code", "行政相对人编码 administrative_cp_ui_code", required=True, max_len=20, personal_id=True),
    FieldSpec("address_registered", "注册地址 address_registered", max_len=400),
    FieldSpec("address_operating", "经营地址 address_operating", max_len=400),
    FieldSpec("area_number", "行政区划代码 area_number", required=True, max_len=6, check="region"),
)

_TAIL = (
    FieldSpec("submitted_date", "报送时间 submitted_date", kind="date"),
    FieldSpec("submitter", "报送人员 submitted_personnel", max_len=50),
)

KEY = ("action_code", "implementing_body_code")

INSPECTION = Dataset(
    name="inspection",
    label="行政检查行为",
    key_fields=KEY,
    date_field="check_date",
    fields=(
        FieldSpec("plan_id", "双随机一公开计划id plan_id", max_len=50),
        *_head("检查行为", "check_action"),
        *_SUBJECT,
        FieldSpec("check_form", "检查形式 check_form", kind="code", required=True, codes=CHECK_FORMS),
        FieldSpec("check_type", "检查类别 check_type", kind="code", required=True, codes=CHECK_TYPES),
        FieldSpec("check_mode", "检查方式 check_mode", kind="code", codes=CHECK_MODES),
        FieldSpec("check_result", "检查结果 check_result", kind="code", required=True, codes=CHECK_RESULTS),
        FieldSpec("check_date", "检查时间 check_date", kind="date", required=True),
        FieldSpec("inspectors", "检查人员 check_personnel (names, separated by ，)", required=True, max_len=500),
        FieldSpec("inspector_cert_nos", "执法证号 check_personnel_code (separated by ，)", max_len=500),
        *_TAIL,
    ),
)

ENFORCEMENT = Dataset(
    name="enforcement",
    label="行政处罚行为",
    key_fields=KEY,
    date_field="decision_date",
    fields=(
        *_head("处罚行为", "punish_action"),
        FieldSpec("inspection_code", "检查行为编号 check_action_code (the inspection it came from)", required=True,
                  max_len=50),
        *_SUBJECT,
        FieldSpec("case_source", "案件来源 case_source", kind="code", codes=CASE_SOURCES),
        FieldSpec("violation_facts", "违法事实 illegal_fact", required=True, max_len=4000),
        FieldSpec("legal_basis", "处罚依据 punish_basis", required=True, max_len=4000),
        FieldSpec("procedure", "处罚程序 punish_procedure", kind="code", codes=PROCEDURES),
        FieldSpec("hearing", "是否听证 is_hearing", kind="code", codes=YES_NO),
        FieldSpec("filing_date", "处罚立案时间 register_date", kind="date"),
        FieldSpec("criminal", "是否涉刑案件 is_criminal", kind="code", codes=YES_NO),
        FieldSpec("major", "是否重大案件 is_major", kind="code", codes=YES_NO),
        FieldSpec("legal_review", "是否法制审核 is_legal_review", kind="code", codes=YES_NO),
        FieldSpec("legal_review_date", "法制审核日期 legal_review_date", kind="date"),
        FieldSpec("legal_review_opinion", "法制审核意见 legal_review_opinion", max_len=2000),
        FieldSpec("collective", "是否集体讨论 is_collective", kind="code", codes=YES_NO),
        FieldSpec("collective_date", "集体讨论日期 collective_date", kind="date"),
        FieldSpec("collective_conclusion", "集体讨论结论 collective_conclusion", max_len=2000),
        FieldSpec("decision_no", "处罚文书号 punish_doc_no", required=True, max_len=128),
        FieldSpec("decision_date", "作出行政处罚决定日期 punish_date", kind="date", required=True),
        FieldSpec("penalty_kinds", "处罚种类 punish_type", kind="list", required=True, codes=PENALTY_KINDS),
        FieldSpec("fine_yuan", "罚款金额（元） fine_amount", kind="decimal"),
        FieldSpec("result", "处罚结果 punish_result", max_len=2000),
        FieldSpec("reconsideration", "行政复议 administrative_review", max_len=500),
        FieldSpec("litigation", "行政诉讼 administrative_litigation", max_len=500),
        FieldSpec("execution_mode", "结案情况—执行方式 execute_mode", max_len=200),
        FieldSpec("execution_result", "结案情况—执行结果 execute_result", max_len=500),
        FieldSpec("no_penalty", "结案情况—不予行政处罚 no_punish", max_len=500),
        FieldSpec("closed_date", "结案日期 close_date", kind="date"),
        FieldSpec("fine_paid_yuan", "结案实缴罚款金额（元） paid_fine_amount", kind="decimal"),
        FieldSpec("other_handling", "其他处理情况 other_handling", max_len=2000),
        FieldSpec("transfer_date", "移送时间 transfer_date", kind="date"),
        *_TAIL,
    ),
)

COERCION = Dataset(
    name="coercion",
    label="行政强制行为",
    key_fields=KEY,
    date_field="start_date",
    fields=(
        *_head("强制行为", "force_action"),
        FieldSpec("inspection_code", "检查行为编号 check_action_code (if it came from an inspection)", max_len=50),
        *_SUBJECT,
        FieldSpec("basis", "强制依据 force_basis", required=True, max_len=4000),
        FieldSpec("decision_no", "强制决定书号 force_doc_no", required=True, max_len=128),
        FieldSpec("coercion_kind", "行政强制种类 force_type", kind="code", required=True, codes=COERCION_KINDS),
        FieldSpec("measure_type", "强制措施类型 force_measure_type", kind="code", codes=COERCION_MEASURES),
        FieldSpec("execution_type", "强制执行类型 force_execute_type", kind="code", codes=COERCION_EXECUTIONS),
        FieldSpec("result", "强制结果 force_result", max_len=2000),
        FieldSpec("start_date", "起始时间 start_date", kind="date", required=True),
        FieldSpec("end_date", "截止时间 end_date", kind="date"),
        FieldSpec("extension", "延长期限 extend_period", max_len=200),
        *_TAIL,
    ),
)

OTHER_ACTION = Dataset(
    name="other_action",
    label="其他行为",
    key_fields=KEY,
    date_field="start_date",
    fields=(
        *_head("行为", "other_action"),
        *_SUBJECT,
        FieldSpec("item_source", "事项来源 item_source", max_len=200),
        FieldSpec("measure", "监管措施 supervise_measure", required=True, max_len=2000),
        FieldSpec("closing", "结案情况 close_situation", max_len=2000),
        FieldSpec("start_date", "开始时间 start_date", kind="date", required=True),
        FieldSpec("end_date", "结束时间 end_date", kind="date"),
        *_TAIL,
    ),
)

SUPERVISION = (INSPECTION, ENFORCEMENT, COERCION, OTHER_ACTION)
# later field → the field it must not come before, per dataset
DATE_ORDER: dict[str, list[tuple[str, str]]] = {
    "inspection": [("submitted_date", "check_date")],
    "enforcement": [("submitted_date", "decision_date"), ("decision_date", "filing_date"),
                    ("closed_date", "decision_date")],
    "coercion": [("submitted_date", "start_date"), ("end_date", "start_date")],
    "other_action": [("submitted_date", "start_date"), ("end_date", "start_date")],
}

# the national front-end table of each action type (the outbound mappings' table_code)
NATIONAL_TABLES = {"inspection": "tr_t_jgxw_check_action", "enforcement": "tr_t_jgxw_punish_action",
                   "coercion": "tr_t_jgxw_force_action", "other_action": "tr_t_jgxw_other_action"}


def national_column(spec: FieldSpec) -> str:
    """The front-end table's column of a supervision field (the identifier in its label)."""
    return spec.label.split(" ")[1]
