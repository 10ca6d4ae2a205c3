"""Sample 双公示 rows in a department's own column names: the generator behind :mod:`gateway.testing.department_db`.

It plays the department's own system: two tables with *local* column names and codes (``xzcf`` 行政处罚,
``xzxk`` 行政许可; the gateway's ``mappings/department-*.toml`` translate them), filled with synthetic but
plausible Suzhou records: company, shop and person names, valid 统一社会信用代码 and 居民身份证号码 (check
characters from :mod:`gateway.domain.identifiers`), decision numbers, legal bases, fines. Valid rows have
decision dates before ``today`` and ``gxsj`` before ``today`` 00:00; broken ones are broken as their kind
(:data:`gateway.testing.department_db.INVALID_KINDS`) says.

Generation uses precomputed pools (names, subjects, facts), so memory does not grow with the row count; rows
are a pure function of (seed, today).
"""
from __future__ import annotations

import datetime as dt
import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from gateway.domain.identifiers import (
    USCC_ALPHABET,
    id_check_char,
    uscc_check_char,
)

__all__ = [
    "COLUMNS",
    "PLACEHOLDER_USCC",
    "RowMaker",
    "as_utc",
    "format_gxsj",
    "make_uscc",
    "sample_calendar",
    "sample_pools",
    "utc_today",
    "utcnow",
]

PLACEHOLDER_USCC: Final = "00000000000000000X"
PLATFORM_NAME_LIMIT: Final = 200  # the platform rejects longer subject names (kind "platform_reject")
LONG_TERM: Final = "2099/12/31"  # 长期 licences
_HISTORY_DAYS: Final = 3 * 365
# Kinds that need a particular subject: an organisation (it has a USCC and a long name) or a person.
_FORCED_SUBJECT: Final = {"bad_uscc": "1", "placeholder_uscc": "1", "platform_reject": "1", "bad_id": "2"}
T = TypeVar("T")

# ---------------------------------------------------------------- schema

Row = tuple[Any, ...]
Subject = tuple[str, str, str, str, str, str, str, str]  # xdr_mc, xdr_lb, tyshxydm, fddbr, fddbr_zjlx/zjhm, zjlx/zjhm
_SUBJECT_COLUMNS: Final = ("xdr_mc", "xdr_lb", "tyshxydm", "fddbr", "fddbr_zjlx", "fddbr_zjhm", "zjlx", "zjhm")
COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "xzcf": ("cfjdswh", *_SUBJECT_COLUMNS, "wfxwlx", "wfss", "cfyj", "cflb", "cfnr", "fkje", "mswfsd", "zkdxzz",
             "jdrq", "cfyxq", "gsjzq", "cfjg", "cfjgdm", "ly", "sxyzcd", "zt", "bz"),
    "xzxk": ("xkjdswh", "xkwsmc", *_SUBJECT_COLUMNS, "xklb", "xkzsmc", "xkbh", "xknr", "jdrq", "yxqz", "yxqzi",
             "xkjg", "xkjgdm", "zt", "bz"),
}
REAL_COLUMNS: Final = frozenset({"fkje", "mswfsd"})
DATE_COLUMNS: Final = {"xzcf": ("jdrq", "cfyxq", "gsjzq"), "xzxk": ("jdrq", "yxqz", "yxqzi")}
TEXT_COLUMN: Final = {"xzcf": "wfss", "xzxk": "xknr"}  # the required free text that "missing_required" empties
EDIT_COLUMN: Final = {"xzcf": "cfnr", "xzxk": "xknr"}
# Columns "fix" may rewrite; table and column names below come only from COLUMNS, never from callers.
FIXABLE: Final = {t: ("xdr_mc", "xdr_lb", "tyshxydm", "fddbr_zjhm", "zjhm", TEXT_COLUMN[t], *DATE_COLUMNS[t])
                   + (("cflb",) if t == "xzcf" else ()) for t in COLUMNS}


# ---------------------------------------------------------------- reference data

_ORG_CHARS: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _org_check_char(code8: str) -> str:
    """GB 11714 check character of an 8-character organisation code (positions 9-17 of a USCC)."""
    total = sum(_ORG_CHARS.index(c) * w for c, w in zip(code8, (3, 7, 9, 10, 5, 8, 4, 2), strict=True))
    return "0123456789X0"[11 - total % 11]


def make_uscc(prefix: str, region: str, code8: str) -> str:
    """A valid USCC from its parts: '91'/'92'/'11' + 6-digit region + 8-char org code (+ both checks)."""
    first17 = prefix + region + code8 + _org_check_char(code8)
    return first17 + uscc_check_char(first17)


@dataclass(frozen=True, slots=True)
class _Body:
    """A deciding body (处罚机关 / 许可机关) and its document-number prefixes."""

    name: str
    uscc: str
    penalty_prefix: str
    licence_prefix: str


_BODIES: Final = (
    _Body("苏州市市场监督管理局", make_uscc("11", "320500", "01416015"), "苏市监罚", "苏市监许"),
    _Body("苏州市应急管理局", make_uscc("11", "320500", "MB1C1783"), "苏应急罚", "苏应急许"),
    _Body("苏州市消防救援支队", make_uscc("11", "320500", "MB1D4452"), "苏消行罚决字", "苏消许"),
    _Body("苏州市交通运输局", make_uscc("11", "320500", "01416093"), "苏交执罚", "苏交运许"),
)
_ID_REGIONS: Final = ("320505", "320506", "320507", "320508", "320509", "320571")
_ORG_REGIONS: Final = (*_ID_REGIONS, "320500", "320581", "320583")
_DISTRICTS: Final = ("苏州市虎丘区", "苏州市吴中区", "苏州市相城区", "苏州市姑苏区", "苏州市吴江区", "苏州工业园区")
_ROADS: Final = ("人民路", "干将路", "十全街", "长江路", "宝带西路", "东环路", "星湖街", "金鸡湖大道", "太湖东路",
                 "阳澄湖大道", "中山北路", "枫津路", "苏州大道东", "吴中大道", "东吴北路", "观前街")
_SURNAMES: Final = ("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程"
                    "魏吕丁任沈姚卢姜钟谭陆汪范金石贾夏方邹孟熊秦邱江薛顾毛钱严戴孔汤")
_MALE: Final = "伟强磊军勇杰涛斌超明刚平辉鹏华飞鑫波宇浩凯健俊帆旭宁龙林洋志国建峰文博海荣"
_FEMALE: Final = "芳娜敏静丽艳娟霞秀玲桂英红梅莉婷雪琳晶燕倩颖慧洁雯欣怡佳萍兰月"
_BRAND_A: Final = "瑞恒华鑫金永天新博嘉宏盛德汇安中东苏吴启明裕福康泰隆兴昌宝正通创万方信立亿美"
_BRAND_B: Final = "丰达信源诚盛成宇远禾图润通泰顺鼎越科联业辰晟锦昊森航宸弘耀腾宁和嘉利发"
_TRADES: Final = ("食品", "餐饮管理", "贸易", "电子科技", "机械制造", "物流", "建设工程", "化工", "医药", "商贸",
                  "精密模具", "新材料", "纺织", "环保科技", "物业管理", "汽车运输", "酒店管理", "生物科技",
                  "包装材料", "超市", "智能装备", "供应链管理", "建材", "家具")
_CITY_PREFIXES: Final = ("苏州", "苏州", "苏州", "苏州市", "江苏", "苏州工业园区")
_SHOPS: Final = ("便利店", "小吃店", "面馆", "水果店", "五金店", "理发店", "烟酒商行", "汽车维修部", "快餐店",
                 "副食品店", "茶叶店", "服装店", "建材经营部", "早餐店")

# ---------------------------------------------------------------- penalty and licence templates


@dataclass(frozen=True, slots=True)
class _PenaltyKind:
    """One kind of violation a body punishes: what is written into a penalty row."""

    body: int
    ly: str
    wfxwlx: str
    facts: tuple[str, ...]  # format strings: {addr} {item} {value} {qty}
    items: tuple[str, ...]
    cfyj: str
    combos: tuple[str, ...]  # comma-joined cflb codes
    fine: tuple[int, int]
    cert: str = ""  # 暂扣/吊销 certificate name when a combo has 06/08
    weight: int = 2
    subjects: str = "13"  # the xdr_lb codes it fits: 1 organisation, 2 natural person, 3 个体工商户


_SOLD: Final = "经查，当事人在其位于{addr}的经营场所"
_FOUND: Final = "执法人员于现场检查时发现，当事人位于{addr}的"
_PENALTY_KINDS: Final = (
    _PenaltyKind(0, "食品", "经营超过保质期的食品",
                 (_SOLD + "销售超过保质期的{item}共{qty}件，货值金额{value}元，违反了《中华人民共和国食品安全法》"
                  "第三十四条第（十）项的规定。", _FOUND + "门店货架上陈列有超过保质期的{item}{qty}件，标价待售。"),
                 ("酸奶", "饼干", "方便面", "火腿肠", "果汁饮料", "速冻水饺", "面包", "调味酱", "月饼"),
                 "《中华人民共和国食品安全法》第一百二十四条第一款第（五）项",
                 ("03", "03", "01,03", "03,04", "03,04,05", "03,08"), (5000, 100000), "食品经营许可证", 6),
    _PenaltyKind(0, "食品", "未取得食品经营许可从事食品经营活动",
                 (_SOLD + "未取得食品经营许可从事{item}经营活动，货值金额{value}元。",),
                 ("熟食", "糕点", "冷食类食品", "自制饮品", "预包装食品"),
                 "《中华人民共和国食品安全法》第一百二十二条第一款",
                 ("03,04,05", "03,05", "03,04"), (10000, 150000), weight=3, subjects="123"),
    _PenaltyKind(0, "食品", "未按规定查验并记录进货信息",
                 (_FOUND + "门店未建立进货查验记录制度，无法提供{item}的供货者许可证和产品合格证明。",),
                 ("食用农产品", "肉制品", "冷冻水产品", "食用油"),
                 "《中华人民共和国食品安全法》第一百二十六条第一款第（三）项",
                 ("01", "01,03", "03", "03,12,08"), (5000, 50000), "食品经营许可证", 4),
    _PenaltyKind(0, "药品", "销售劣药",
                 (_SOLD + "销售经检验不符合药品标准的{item}{qty}盒，货值金额{value}元，违法所得已没收。",),
                 ("板蓝根颗粒", "复方甘草片", "阿莫西林胶囊", "感冒灵颗粒", "维生素C片"),
                 "《中华人民共和国药品管理法》第一百一十七条第一款",
                 ("03,04,05", "03,04", "03,04,08"), (100000, 500000), "药品经营许可证", 2),
    _PenaltyKind(0, "价格", "不按规定明码标价",
                 (_FOUND + "门店销售的{item}等{qty}种商品未按规定明码标价。",),
                 ("蔬菜", "水果", "烟酒", "日用百货", "服装"),
                 "《中华人民共和国价格法》第四十二条", ("01", "02", "03", "01,03"), (500, 5000), weight=3),
    _PenaltyKind(0, "广告", "发布虚假广告",
                 ("经查，当事人通过微信公众号发布含有“{item}”等虚假内容的广告，广告费用{value}元，违反了"
                  "《中华人民共和国广告法》第二十八条的规定。",),
                 ("根治失眠", "全国销量第一", "百分之百有效", "三天见效"),
                 "《中华人民共和国广告法》第五十五条第一款", ("03", "03,04", "03,09"), (20000, 300000)),
    _PenaltyKind(0, "特种设备", "使用未经定期检验的特种设备",
                 (_FOUND + "{item}{qty}台超过检验有效期未申报定期检验，仍在继续使用。",),
                 ("乘客电梯", "载货电梯", "叉车", "压力容器", "燃气锅炉"),
                 "《中华人民共和国特种设备安全法》第八十四条第（一）项",
                 ("03", "10,03", "03,99"), (30000, 300000), weight=3),
    _PenaltyKind(0, "其他", "销售不合格产品",
                 (_SOLD + "销售经抽检不合格的{item}{qty}件，货值金额{value}元。",),
                 ("电线电缆", "儿童玩具", "电动自行车头盔", "插座", "化肥"),
                 "《中华人民共和国产品质量法》第四十九条", ("03,04,05", "03,05", "03"), (2000, 200000)),
    _PenaltyKind(1, "安全生产", "未按规定对从业人员进行安全生产教育和培训",
                 ("经查，当事人未对{item}等{qty}名从业人员进行安全生产教育和培训，即安排上岗作业。",),
                 ("叉车司机", "电焊工", "仓库管理员", "生产线操作工"),
                 "《中华人民共和国安全生产法》第九十七条第（三）项", ("03", "01,03", "03,10"), (10000, 100000),
                 weight=4),
    _PenaltyKind(1, "安全生产", "未对重大危险源进行定期检测、评估、监控",
                 ("经查，当事人{item}构成重大危险源，未按规定进行定期检测、评估和监控，存在事故隐患。",),
                 ("液氨储罐区", "甲醇储罐区", "液化石油气储存区", "涂料仓库"),
                 "《中华人民共和国安全生产法》第一百零一条第（二）项", ("03", "03,10", "03,11", "03,09"),
                 (50000, 200000)),
    _PenaltyKind(1, "安全生产", "未取得危险化学品经营许可证从事经营",
                 ("经查，当事人未取得危险化学品经营许可证，擅自经营{item}，货值金额{value}元。",),
                 ("汽油", "乙醇", "液化石油气", "油漆稀释剂"),
                 "《危险化学品安全管理条例》第七十七条第三款", ("03,04,05", "03,05"), (100000, 200000)),
    _PenaltyKind(2, "消防", "消防设施、器材未保持完好有效",
                 (_FOUND + "场所内{item}{qty}处损坏，未保持完好有效。",),
                 ("室内消火栓", "应急照明灯", "疏散指示标志", "火灾自动报警系统探测器", "灭火器"),
                 "《中华人民共和国消防法》第六十条第一款第（一）项", ("03", "01", "01,03"), (5000, 50000),
                 weight=5),
    _PenaltyKind(2, "消防", "占用、堵塞、封闭疏散通道、安全出口",
                 (_FOUND + "场所{item}被杂物占用、堵塞，影响人员安全疏散。",),
                 ("疏散楼梯", "安全出口", "一层疏散通道", "防火门"),
                 "《中华人民共和国消防法》第六十条第一款第（三）项", ("03", "01", "01,03"), (5000, 50000),
                 weight=4, subjects="123"),
    _PenaltyKind(2, "消防", "公众聚集场所未经消防安全检查擅自投入使用、营业",
                 ("经查，当事人经营的{item}未经消防救援机构许可，擅自投入使用、营业。",),
                 ("KTV", "宾馆", "网吧", "健身房", "剧本杀店"),
                 "《中华人民共和国消防法》第五十八条第一款第（四）项", ("10,03", "03"), (30000, 300000)),
    _PenaltyKind(3, "其他", "未取得道路运输经营许可，擅自从事道路运输经营",
                 ("经查，当事人驾驶{item}，未取得道路运输经营许可，擅自从事道路旅客运输经营，违法所得{value}元。",),
                 ("苏E·3K5X9号小型客车", "苏E·8M2Q1号小型客车", "苏U·D7F27号中型客车", "苏E·52H6N号轿车"),
                 "《中华人民共和国道路运输条例》第六十三条", ("03", "03,04"), (10000, 100000), weight=3,
                 subjects="123"),
    _PenaltyKind(3, "其他", "车辆违法超限运输",
                 ("经查，当事人所属{item}违法超限运输，车货总质量超过限定标准{qty}吨。",),
                 ("苏E·H2J36号重型半挂牵引车", "苏E·G8825号重型货车", "苏U·F3751号重型自卸货车"),
                 "《公路安全保护条例》第六十四条", ("03", "03,06"), (500, 30000), "道路运输证", 3, "123"),
    _PenaltyKind(3, "安全生产", "未按规定使用车辆卫星定位装置",
                 ("经查，当事人所属{item}未按规定安装使用具有行驶记录功能的卫星定位装置，动态监控中断。",),
                 ("苏E·BK903号客车", "苏E·Q5A28号危险货物运输车", "苏U·K2609号客车"),
                 "《道路运输车辆动态监督管理办法》第三十七条", ("01", "03", "01,03", "03,07"), (800, 3000)),
)
_ROUND_AMOUNTS: Final = (200, 500, 800, 1000, 2000, 3000, 5000, 8000, 10000, 15000, 20000, 30000, 50000, 80000,
                         100000, 150000, 200000, 300000, 500000)
_BZ: Final = ("", "", "", "", "", "", "当事人已履行完毕", "当事人已缴纳罚款", "责令当事人立即改正", "已送达")


@dataclass(frozen=True, slots=True)
class _LicenceKind:
    """One kind of licence a body grants."""

    body: int
    xkwsmc: str
    xklb: str
    xkzsmc: str
    xkbh: str  # format string: {d} district, {y} year, {n} sequence
    contents: tuple[str, ...]
    years: int  # validity; 0 = 长期 (2099/12/31)
    weight: int = 2
    subjects: str = "13"  # the xdr_lb codes it fits


_LICENCE_KINDS: Final = (
    _LicenceKind(0, "食品经营许可决定书", "1", "食品经营许可证", "JY1{d}{n:07d}",
                 ("预包装食品（含冷藏冷冻食品）销售",
                  "预包装食品（不含冷藏冷冻食品）销售，散装食品（不含冷藏冷冻食品）销售",
                  "热食类食品制售，冷食类食品制售", "自制饮品制售", "糕点类食品（含裱花蛋糕）制售"), 5, 8),
    _LicenceKind(0, "药品经营许可决定书", "1", "药品经营许可证", "苏DB{d}{n:05d}",
                 ("处方药、甲类非处方药、乙类非处方药：中成药、化学药制剂、抗生素制剂、生化药品",
                  "乙类非处方药：中成药、化学药制剂"), 5),
    _LicenceKind(0, "特种设备使用登记决定书", "5", "特种设备使用登记证", "梯11苏E{n:05d}({y})",
                 ("准予办理乘客电梯使用登记", "准予办理载货电梯使用登记", "准予办理场（厂）内专用机动车辆使用登记"), 0),
    _LicenceKind(0, "工业产品生产许可决定书", "4", "全国工业产品生产许可证", "(苏)XK06-{n:06d}",
                 ("准予生产电线电缆产品", "准予生产危险化学品包装物、容器产品", "准予生产化肥产品"), 5, 1, "1"),
    _LicenceKind(0, "计量标准考核决定书", "9", "计量标准考核证书", "[{y}]苏量标苏证字第{n:04d}号",
                 ("准予开展压力表检定装置计量检定工作",), 4, 1, "1"),
    _LicenceKind(0, "特种设备安全管理和作业人员资格认定决定书", "3", "特种设备安全管理和作业人员证",
                 "TS{y}{d}{n:07d}", ("叉车司机（N1）", "电梯修理（T）", "工业锅炉司炉（G1）", "起重机指挥（Q1）"), 4,
                 subjects="2"),
    _LicenceKind(1, "危险化学品经营许可决定书", "1", "危险化学品经营许可证", "苏(苏)危化经字〔{y}〕{n:06d}",
                 ("批发（不带储存）：汽油、柴油[闭杯闪点≤60℃]、甲醇、乙醇[无水]", "零售：液化石油气、丙烷"), 3, 3),
    _LicenceKind(1, "安全生产许可决定书", "4", "安全生产许可证", "（苏）WH安许证字〔E{n:05d}〕",
                 ("许可范围：危险化学品生产",), 3, 1, "1"),
    _LicenceKind(2, "公众聚集场所投入使用、营业前消防安全检查合格证", "1", "消防安全检查合格证",
                 "苏消安检字〔{y}〕第{n:04d}号", ("同意宾馆投入使用、营业", "同意KTV投入使用、营业",
                                                "同意商场投入使用、营业", "同意健身房投入使用、营业"), 0, 3),
    _LicenceKind(3, "道路运输经营许可决定书", "2", "道路运输经营许可证", "苏交运管许可苏字{d}{n:06d}号",
                 ("道路普通货物运输", "道路普通货物运输，货物专用运输（集装箱）",
                  "道路危险货物运输（2类1项，3类）"), 4, 4),
    _LicenceKind(3, "道路运输从业人员从业资格认可决定书", "3", "道路运输从业人员从业资格证", "苏交从{d}{n:08d}",
                 ("经营性道路货物运输驾驶员", "经营性道路旅客运输驾驶员", "巡游出租汽车驾驶员"), 6, 3, "2"),
)


def _picks(kinds: Sequence[_PenaltyKind | _LicenceKind]) -> dict[str, tuple[int, ...]]:
    """Per xdr_lb code, the indices of the kinds that fit it, each repeated by its weight (uniform picks)."""
    return {lb: tuple(i for i, k in enumerate(kinds) if lb in k.subjects for _ in range(k.weight)) for lb in "123"}


_PENALTY_PICKS: Final = _picks(_PENALTY_KINDS)
_LICENCE_PICKS: Final = _picks(_LICENCE_KINDS)

# ---------------------------------------------------------------- pools of names and subjects


def _person(rng: random.Random) -> tuple[str, str]:
    """A person's name and a valid resident ID number (Suzhou districts, born 1950-2004)."""
    male = rng.random() < 0.5
    chars = _MALE if male else _FEMALE
    given = "".join(rng.choice(chars) for _ in range(1 if rng.random() < 0.35 else 2))
    birth = dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(55 * 365))
    seq = rng.randrange(50) * 2 * 10 + rng.randrange(5) * 2 + (1 if male else 0)
    first17 = f"{rng.choice(_ID_REGIONS)}{birth:%Y%m%d}{seq:03d}"
    return rng.choice(_SURNAMES) + given, first17 + id_check_char(first17)


def _code8(rng: random.Random) -> str:
    """The first 8 characters of an organisation code: newer 'MA…' codes or older all-digit ones."""
    if rng.random() < 0.3:
        return f"{rng.randrange(10**8):08d}"
    return "MA" + "".join(rng.choice(USCC_ALPHABET[:-1]) for _ in range(6))


def _brand(rng: random.Random) -> str:
    return rng.choice(_BRAND_A) + rng.choice(_BRAND_B)


def _company_name(rng: random.Random) -> str:
    suffix = rng.choices(("有限公司", "股份有限公司", "有限责任公司"), (17, 2, 1))[0]
    return rng.choice(_CITY_PREFIXES) + _brand(rng) + rng.choice(_TRADES) + suffix


def _shop_name(rng: random.Random) -> str:
    owner = rng.choice(_SURNAMES) + "记" if rng.random() < 0.4 else _brand(rng)
    return rng.choice(_DISTRICTS) + owner + rng.choice(_SHOPS)


def _organisation(rng: random.Random, names: set[str]) -> Subject:
    name = _company_name(rng)
    while name in names:
        name = _company_name(rng)
    names.add(name)
    rep, rep_id = _person(rng)
    return (name, "1", make_uscc("91", rng.choice(_ORG_REGIONS), _code8(rng)), rep, "01", rep_id, "", "")


def _shop(rng: random.Random, names: set[str]) -> Subject:
    name = _shop_name(rng)
    while name in names:
        name = _shop_name(rng)
    names.add(name)
    owner, owner_id = _person(rng)
    return (name, "3", make_uscc("92", rng.choice(_ID_REGIONS), _code8(rng)), owner, "01", owner_id, "", "")


def _natural_person(rng: random.Random) -> Subject:
    name, number = _person(rng)
    return (name, "2", "", "", "", "", "01", number)


def _address(rng: random.Random) -> str:
    return f"{rng.choice(_DISTRICTS)}{rng.choice(_ROADS)}{rng.randrange(1, 1999)}号"


def _fact(rng: random.Random, kind: _PenaltyKind) -> str:
    """One 违法事实 sentence of a penalty kind, filled in."""
    value = rng.choice((800, 1200, 2500, 3600, 5000, 12000, 26800)) + rng.randrange(100)
    return rng.choice(kind.facts).format(addr=_address(rng), item=rng.choice(kind.items), value=value,
                                         qty=rng.randrange(2, 60))


@dataclass(frozen=True, slots=True)
class _Pools:
    """Everything rows are drawn from, built once per seed."""

    organisations: tuple[Subject, ...]
    shops: tuple[Subject, ...]
    persons: tuple[Subject, ...]
    facts: tuple[tuple[str, ...], ...]  # per _PENALTY_KINDS index


@functools.lru_cache(maxsize=4)
def sample_pools(seed: int) -> _Pools:
    rng = random.Random(f"pools:{seed}")  # noqa: S311 - synthetic data, reproducible by seed
    names: set[str] = set()
    return _Pools(
        organisations=tuple(_organisation(rng, names) for _ in range(6000)),
        shops=tuple(_shop(rng, names) for _ in range(2000)),
        persons=tuple(_natural_person(rng) for _ in range(3000)),
        facts=tuple(tuple(_fact(rng, k) for _ in range(40)) for k in _PENALTY_KINDS),
    )


# ---------------------------------------------------------------- dates


class _Calendar:
    """Preformatted dates around ``today``, indexed by day number (cheap per row)."""

    def __init__(self, today: dt.date) -> None:
        self.today = today
        self._base = today.toordinal() - _HISTORY_DAYS - 400
        days = [dt.date.fromordinal(self._base + i) for i in range(_HISTORY_DAYS + 400 + 7 * 366)]
        self._slash = [f"{d:%Y/%m/%d}" for d in days]
        self._dash = [f"{d:%Y-%m-%d}" for d in days]
        self.yesterday = today.toordinal() - 1 - self._base

    def day(self, days_ago: int) -> int:
        """The day number of ``today - days_ago`` (negative: in the future)."""
        return self.yesterday + 1 - days_ago

    def slash(self, day: int) -> str:
        return self._slash[day]

    def stamp(self, day: int, seconds: int, micros: int) -> str:
        """A gxsj value: the day plus a time of day (UTC)."""
        hh, rest = divmod(seconds, 3600)
        return f"{self._dash[day]} {hh:02d}:{rest // 60:02d}:{rest % 60:02d}.{micros:06d}"


sample_calendar = functools.lru_cache(maxsize=8)(_Calendar)


def as_utc(moment: dt.datetime) -> dt.datetime:
    """The moment in UTC (naive values are taken as UTC already)."""
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def format_gxsj(moment: dt.datetime) -> str:
    """A gxsj value for a moment: UTC, ``YYYY-MM-DD HH:MM:SS.ffffff`` (naive values are taken as UTC)."""
    return as_utc(moment).strftime("%Y-%m-%d %H:%M:%S.%f")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def utc_today() -> dt.date:
    return utcnow().date()


# ---------------------------------------------------------------- row generation

# 处罚内容 words per cflb code; one str.format per row fills in the amounts and the certificate.
_PHRASES: Final = {"01": "警告", "02": "通报批评", "03": "罚款人民币{fine}元", "04": "没收违法所得人民币{gain}元",
                   "05": "没收违法经营的物品", "06": "暂扣{cert}三个月", "07": "降低资质等级", "08": "吊销{cert}",
                   "09": "限制开展生产经营活动六个月", "10": "责令停产停业十五日", "11": "责令关闭",
                   "12": "法定代表人五年内不得从事相关生产经营管理工作", "99": "责令限期改正"}
KNOWN_CFLB: Final = frozenset(_PHRASES) | {"13"}
_ID_CHECK_CHARS: Final = "0123456789X"


def _yuan(amount: float) -> str:
    return f"{amount:.0f}" if amount == int(amount) else f"{amount:.2f}"


def _severity(codes: str, fine: float) -> str:
    """失信严重程度: 3 严重 for revocations, closures and big fines, 2 较重, else 1 一般."""
    if fine >= 200_000 or any(c in codes for c in ("08", "10", "11", "12")):
        return "3"
    return "2" if fine >= 50_000 else "1"


@functools.lru_cache(maxsize=64)
def _round_amounts(low: int, high: int) -> tuple[int, ...]:
    return tuple(a for a in _ROUND_AMOUNTS if low <= a <= high) or (low,)


def _wrong_char(good: str, alphabet: str, shift: float) -> str:
    """A character of ``alphabet`` other than ``good``."""
    return alphabet[(alphabet.index(good) + 1 + int(shift * (len(alphabet) - 1))) % len(alphabet)]


class RowMaker:
    """Generates the rows of one table from one random stream.

    Bulk rows number their decisions per (prefix, year); appended rows (``by_id``) use their row id,
    which is larger than any bulk counter, so decision numbers stay unique per table either way.
    """

    def __init__(self, seed: str, pools: _Pools, cal: _Calendar, *, natural: float, by_id: bool) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - synthetic data, reproducible by seed
        self.r = self.rng.random
        self.pools = pools
        self.cal = cal
        self.natural = natural
        self.counters: dict[str, int] | None = None if by_id else {}
        self.gxsj: str | None = None  # one fixed gxsj for appended rows
        self.max_age = _HISTORY_DAYS

    def pick(self, items: Sequence[T]) -> T:
        return items[int(self.r() * len(items))]

    def subject(self, kind: str | None) -> Subject:
        forced = _FORCED_SUBJECT.get(kind or "")
        if forced == "2" or (forced is None and self.r() < self.natural):
            return self.pick(self.pools.persons)
        if forced is None and self.r() < 0.25:
            return self.pick(self.pools.shops)
        return self.pick(self.pools.organisations)

    def number(self, prefix: str, day: int, row_id: int) -> str:
        year = self.cal.slash(day)[:4]
        if self.counters is None:
            return f"{prefix}〔{year}〕{row_id}号"
        key = prefix + year
        n = self.counters[key] = self.counters.get(key, 0) + 1
        return f"{prefix}〔{year}〕{n}号"

    def dates(self, kind: str | None) -> tuple[int, str]:
        """The decision day (in the future for "future_date") and the row's gxsj (always in the past)."""
        r, cal = self.r, self.cal
        day = cal.day(1 + int(r() * self.max_age))
        stamp = self.gxsj or cal.stamp(min(day + int(r() * 8), cal.yesterday), int(r() * 36000), int(r() * 1e6))
        if kind == "future_date":
            day = cal.day(-1 - int(r() * 60))
        return day, stamp

    def status(self) -> str:
        x = self.r()
        return "0" if x < 0.97 else "1" if x < 0.98 else "2" if x < 0.99 else "3"

    def amount(self, low: int, high: int) -> float:
        """A fine in 元: mostly round numbers, otherwise a multiple of 10 in the range."""
        if self.r() < 0.7:
            return float(self.pick(_round_amounts(low, high)))
        return float(low + int(self.r() * (high - low) / 10) * 10)

    def penalty(self, row_id: int, kind: str | None) -> Row:
        subject = self.subject(kind)
        index = self.pick(_PENALTY_PICKS[subject[1]])
        pk, cal = _PENALTY_KINDS[index], self.cal
        body = _BODIES[pk.body]
        day, stamp = self.dates(kind)
        codes = self.pick(pk.combos)
        fine = self.amount(*pk.fine) if "03" in codes else 0.0
        gain = float(200 + int(self.r() * 300) * 50) if "04" in codes else 0.0
        cfnr = "，".join(_PHRASES[c] for c in codes.split(",")).format(fine=_yuan(fine), gain=_yuan(gain),
                                                                        cert=pk.cert)
        zkdx = f"{pk.cert}（{row_id:08d}）" if "06" in codes or "08" in codes else ""
        severity = _severity(codes, fine)
        gsjzq = "" if self.r() < 0.1 else cal.slash(day + 365 * int(severity))
        return (row_id, self.number(body.penalty_prefix, day, row_id), *subject, pk.wfxwlx,
                self.pick(self.pools.facts[index]), pk.cfyj, codes, cfnr, fine or None, gain or None, zkdx,
                cal.slash(day), cal.slash(day + self.pick((30, 90, 180, 365))), gsjzq, body.name, body.uscc,
                pk.ly, severity, self.status(), self.pick(_BZ), stamp)

    def licence(self, row_id: int, kind: str | None) -> Row:
        subject = self.subject(kind)
        lk, cal = _LICENCE_KINDS[self.pick(_LICENCE_PICKS[subject[1]])], self.cal
        body = _BODIES[lk.body]
        day, stamp = self.dates(kind)
        until = LONG_TERM if lk.years == 0 else cal.slash(day + lk.years * 365 - 1)
        xkbh = lk.xkbh.format(d=self.pick(_ID_REGIONS), y=cal.slash(day)[:4], n=row_id)
        return (row_id, self.number(body.licence_prefix, day, row_id), lk.xkwsmc, *subject, lk.xklb,
                lk.xkzsmc, xkbh, self.pick(lk.contents), cal.slash(day), cal.slash(day), until, body.name,
                body.uscc, self.status(), "", stamp)

    def row(self, table: str, row_id: int, kind: str | None) -> Row:
        made = self.penalty(row_id, kind) if table == "xzcf" else self.licence(row_id, kind)
        return made if kind is None or kind == "future_date" else self.broken(table, made, kind)

    def broken(self, table: str, made: Row, kind: str) -> Row:
        """The row damaged the way ``kind`` says (future dates are made in :meth:`dates`)."""
        row, col = list(made), _POSITION[table]
        if kind == "bad_uscc":
            good = row[col["tyshxydm"]]
            row[col["tyshxydm"]] = good[:17] + _wrong_char(good[17], USCC_ALPHABET, self.r())
        elif kind == "placeholder_uscc":
            row[col["tyshxydm"]] = PLACEHOLDER_USCC
        elif kind == "missing_required":
            row[col["xdr_mc" if self.r() < 0.5 else TEXT_COLUMN[table]]] = ""
        elif kind == "unknown_code" and table == "xzcf" and self.r() < 0.5:
            row[col["cflb"]] += ",77"
        elif kind == "unknown_code":
            row[col["xdr_lb"]] = "8"
        elif kind == "bad_id":
            good = row[col["zjhm"]]
            row[col["zjhm"]] = good[:17] + _wrong_char(good[17], _ID_CHECK_CHARS, self.r())
        elif kind == "platform_reject":
            row[col["xdr_mc"]] = self.long_name(row[col["xdr_mc"]])
        return tuple(row)

    def long_name(self, name: str) -> str:
        """The name plus a long parenthesised note: 202-241 characters, over PLATFORM_NAME_LIMIT."""
        note = f"{name}（原名称{name}；经营场所：" + "；".join(_address(self.rng) for _ in range(20))
        return note[: PLATFORM_NAME_LIMIT + int(self.r() * 40)] + "）"


_POSITION: Final = {t: {c: i + 1 for i, c in enumerate(cols)} for t, cols in COLUMNS.items()}  # +1: id first
