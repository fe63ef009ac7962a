"""The ra filter language: parsing an expression and evaluating it on a record table.

Operators: ``and``/``&&``, ``or``/``||``, ``not``/``!`` and brackets. ``not`` binds
tightest; ``and`` and ``or`` have equal precedence and group from the left, as in
Argus (``a or b and c`` is ``(a or b) and c``). A bare value after ``and``/``or``
repeats the previous primitive's qualifiers and keyword: ``port 80 or 81``,
``host 10.0.0.1 and 10.0.0.2``, ``tcp dst port 80 or 81``.

Primitives::

    [src|dst] host ADDR            [src|dst] net CIDR | net ADDR mask MASK
    [tcp|udp] [src|dst] port P     P = number, range 53-215 or service name
    ip ipv4 ipv6 tcp udp icmp icmpv6 igmp arp rarp gre esp ah sctp llc
    [ip] proto N|NAME              ether [src|dst|host] MAC
    [src|dst] COUNTER [OP] N       COUNTER = pkts bytes appbytes ttl tos trans dur seq
                                   OP = eq lt lte gt gte neq (default eq)
    [src|dst] co CC                srcid ID     vlan N
    [src|dst] multicast            [src|dst] broadcast   (no direction: dst)
    TCP: syn synack fin finack rst reset est con retrans outoforder ooo winshut ecn
         frag timeout
    ICMP: echo unreach redirect timexed

``src or dst`` and ``src and dst`` before a keyword test either or both sides
(``src or dst host 10.0.0.1``); a keyword without a direction tests either side.

The TCP and ICMP keywords test what a record carries: its state, dir, flgs,
packet counts and ICMP type. ``syn`` selects TCP records whose initiator was
seen opening the connection (dir without ``?``); ``synack`` those whose responder
answered (state ACC, CON, FIN or CLO, packets both ways); ``fin`` state FIN or
CLO, ``finack`` the same with packets both ways; ``rst``/``reset`` state RST;
``est`` an established connection (CON, FIN or CLO); ``con`` any record with
packets both ways; ``timeout`` state TIM; ``retrans``, ``outoforder``,
``winshut``, ``ecn`` and ``frag`` the matching flgs letters. ``echo``,
``unreach``, ``redirect`` and ``timexed`` select ICMP and ICMPv6 records by type.

A counter without ``src``/``dst`` compares the record total (``pkts gt 10`` is
spkts + dpkts > 10); Argus 3.0.8 tests each direction instead. Counters that
have no total (``ttl``, ``tos``) match when either direction matches.
Expressions compile to a tree of column expressions (``appliance.query.expr``)
evaluated with Arrow compute functions over the whole table.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from appliance.query.expr import Expr, col, seconds_between
from appliance.query.render import IP_PROTOCOL_NAMES
from appliance.records import EtherType, pack_address


class FilterSyntaxError(ValueError):
    """A filter expression that cannot be parsed; names the offending token and its position."""

    def __init__(self, expression: str, token: str, position: int, reason: str) -> None:
        where = f"at {token!r} (character {position + 1})" if token else "at the end"
        super().__init__(f"invalid filter {expression!r} {where}: {reason}")
        self.expression = expression
        self.token = token
        self.position = position
        self.reason = reason

    def pointer(self) -> str:
        """Return the expression with a line of ``^`` under the offending token."""
        marks = "^" * max(len(self.token), 1)
        return f"  {self.expression}\n  {' ' * self.position}{marks}"


_TOKEN = re.compile(r"\s*(&&|\|\||!|\(|\)|[^\s()!]+)")

DIRECTIONS = ("src", "dst")
COMPARISONS: dict[str, Callable[[Expr, float], Expr]] = {
    "eq": lambda column, value: column == value,
    "neq": lambda column, value: column != value,
    "lt": lambda column, value: column < value,
    "lte": lambda column, value: column <= value,
    "gt": lambda column, value: column > value,
    "gte": lambda column, value: column >= value,
}

#: Counters: (source column, destination column, whether a total exists).
COUNTERS: dict[str, tuple[str, str, bool]] = {
    "pkts": ("spkts", "dpkts", True),
    "bytes": ("sbytes", "dbytes", True),
    "appbytes": ("sappbytes", "dappbytes", True),
    "ttl": ("sttl", "dttl", False),
    "tos": ("stos", "dtos", False),
}
#: Record-level numeric values that have no direction.
SCALARS = ("trans", "seq", "dur")

_PROTOCOL_NUMBERS = {name: number for number, name in IP_PROTOCOL_NAMES.items()}
_PROTOCOL_NUMBERS.update({"icmpv6": 58, "ipv6-icmp": 58})
#: Protocol keywords that select by ethertype rather than by IP protocol number.
ETHERTYPE_KEYWORDS = {"ipv4": (EtherType.IPV4,), "ipv6": (EtherType.IPV6,),
                      "ip": (EtherType.IPV4, EtherType.IPV6), "arp": (EtherType.ARP,),
                      "rarp": (0x8035,), "llc": (EtherType.LLC,)}
IP_PROTOCOL_KEYWORDS = ("tcp", "udp", "icmp", "icmpv6", "igmp", "gre", "esp", "ah", "sctp")
#: Keywords for what argus recognises in UDP payloads (the ``appproto`` column).
APP_PROTOCOL_KEYWORDS = ("rtp", "rtcp")

TCP = 6
ICMP_PROTOCOLS = (1, 58)
#: ICMP keywords: (ICMP types, ICMPv6 types) of the records they select.
ICMP_KEYWORDS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "echo": ((0, 8), (128, 129)),
    "unreach": ((3,), (1,)),
    "redirect": ((5,), (137,)),
    "timexed": ((11,), (3,)),
}
#: flgs keywords: (0-based position in the flgs string, letters that set it).
FLAG_KEYWORDS: dict[str, tuple[int, str]] = {
    "retrans": (3, "sd*"),
    "outoforder": (3, "ir&"),
    "ooo": (3, "ir&"),
    "winshut": (4, "SD@"),
    "ecn": (5, "xtE"),
    "frag": (6, "Ff"),
}
STATE_KEYWORDS = ("syn", "synack", "fin", "finack", "rst", "reset", "est", "con", "timeout")
ADDRESS_CLASS_KEYWORDS = ("multicast", "broadcast")
MULTICAST_NETWORKS = ("224.0.0.0/4", "ff00::/8")
BROADCAST_ADDRESS = "255.255.255.255"
BROADCAST_MAC = b"\xff" * 6

KEYWORDS = {"host", "net", "port", "proto", "ether", "co", "srcid", "vlan", "mask",
            *DIRECTIONS, *COUNTERS, *SCALARS, *COMPARISONS, "and", "or", "not",
            *ETHERTYPE_KEYWORDS, *IP_PROTOCOL_KEYWORDS, *APP_PROTOCOL_KEYWORDS,
            *ICMP_KEYWORDS, *FLAG_KEYWORDS,
            *STATE_KEYWORDS, *ADDRESS_CLASS_KEYWORDS}


@dataclass
class _Token:
    text: str
    position: int


@dataclass
class _Template:
    """Qualifiers and keyword of the last primitive, reused by a bare value after and/or."""

    protocol: str | None = None
    direction: str | None = None
    keyword: str = ""
    comparison: str = "eq"
    extra: dict[str, str] = field(default_factory=dict)


class Filter:
    """A parsed filter expression; ``mask`` evaluates it on a record table."""

    def __init__(self, text: str, expression: Expr | None) -> None:
        self.text = text
        self.expression = expression

    @property
    def columns(self) -> set[str]:
        """The record columns the expression reads."""
        return set(self.expression.columns) if self.expression is not None else set()

    def mask(self, table: pa.Table) -> pa.Array | pa.ChunkedArray:
        """Return a boolean array: True for each record the expression selects."""
        if self.expression is None:
            return pa.nulls(table.num_rows, pa.bool_()).fill_null(True)
        return pc.fill_null(self.expression.evaluate(table), False)

    def __repr__(self) -> str:
        return f"Filter({self.text!r})"


def parse_filter(text: str) -> Filter:
    """Parse a filter expression. An empty expression selects every record.

    Raises FilterSyntaxError pointing at the token that cannot be parsed.
    """
    tokens = [_Token(match[1], match.start(1)) for match in _TOKEN.finditer(text)
              if match[1].strip()]
    if not tokens:
        return Filter(text, None)
    parser = _Parser(text, tokens)
    expression = parser.expression()
    if parser.index < len(tokens):
        parser.fail("expected 'and', 'or' or the end of the expression")
    return Filter(text, expression)


class _Parser:
    """Recursive-descent parser producing an expression."""

    def __init__(self, text: str, tokens: list[_Token]) -> None:
        self.text = text
        self.tokens = tokens
        self.index = 0
        self.template: _Template | None = None

    def peek(self, offset: int = 0) -> str | None:
        position = self.index + offset
        return self.tokens[position].text.lower() if position < len(self.tokens) else None

    def take(self) -> str:
        if self.index >= len(self.tokens):
            self.fail("the expression ends too early")
        token = self.tokens[self.index].text
        self.index += 1
        return token

    def fail(self, reason: str, back: int = 0) -> None:
        position = self.index - back
        if position < len(self.tokens):
            token = self.tokens[position]
            raise FilterSyntaxError(self.text, token.text, token.position, reason)
        raise FilterSyntaxError(self.text, "", len(self.text), reason)

    def expression(self) -> Expr:
        result = self.unary()
        while self.peek() in ("and", "&&", "or", "||"):
            operator = self.take().lower()
            right = self.unary(after_operator=True)
            result = result & right if operator in ("and", "&&") else result | right
        return result

    def unary(self, after_operator: bool = False) -> Expr:
        token = self.peek()
        if token in ("not", "!"):
            self.take()
            return ~self.unary()
        if token == "(":
            self.take()
            inner = self.expression()
            if self.peek() != ")":
                self.fail("expected ')'")
            self.take()
            return inner
        if token is None or token == ")":
            self.fail("expected a primitive such as 'host', 'port' or 'tcp'")
        if after_operator and self.template is not None and token not in KEYWORDS:
            return self.repeat_template()
        return self.primitive()

    def repeat_template(self) -> Expr:
        template = self.template
        value = self.take()
        return _build(self, template, value)

    def primitive(self) -> Expr:
        template = _Template()
        token = self.peek()
        if token in IP_PROTOCOL_KEYWORDS + ("ip",) and self.peek(1) in (
                "src", "dst", "port", "host", "net", "proto"):
            template.protocol = self.take().lower()
            token = self.peek()
        if token in DIRECTIONS:
            template.direction = self.take().lower()
            if self.peek() in ("or", "||", "and", "&&") and self.peek(1) in DIRECTIONS:
                joiner = "or" if self.take().lower() in ("or", "||") else "and"
                second = self.take().lower()
                if second == template.direction:
                    self.fail(f"'{second}' twice: use 'src {joiner} dst'", back=1)
                template.direction = f"src {joiner} dst"
            token = self.peek()
        if (token in ETHERTYPE_KEYWORDS or token in IP_PROTOCOL_KEYWORDS
                or token in APP_PROTOCOL_KEYWORDS):
            if template.direction:
                self.fail("a direction needs a keyword such as host, net, port or pkts")
            self.take()
            return _protocol(token)
        if token in ADDRESS_CLASS_KEYWORDS:
            self.take()
            return _address_class(token, template.direction)
        if token in ICMP_KEYWORDS or token in FLAG_KEYWORDS or token in STATE_KEYWORDS:
            if template.direction:
                self.fail(f"'{token}' takes no direction")
            self.take()
            return _record_keyword(token)
        if token in ("host", "net", "port", "proto", "co", "srcid", "vlan", "ether"):
            template.keyword = self.take().lower()
            if template.keyword == "ether" and self.peek() in ("src", "dst", "host"):
                template.direction = {"host": None}.get(self.peek(), self.peek())
                self.take()
        elif token in COUNTERS or token in SCALARS:
            template.keyword = self.take().lower()
            if self.peek() in COMPARISONS:
                template.comparison = self.take().lower()
        else:
            self.fail("unknown keyword")
        value = self.take()
        if template.keyword == "net" and self.peek() == "mask":
            self.take()
            template.extra["mask"] = self.take()
        self.template = template
        return _build(self, template, value)


def _protocol(keyword: str) -> Expr:
    if keyword in APP_PROTOCOL_KEYWORDS:
        return col("appproto").fill_null("") == keyword
    if keyword in ETHERTYPE_KEYWORDS:
        return col("etype").is_in(list(ETHERTYPE_KEYWORDS[keyword]))
    number = _PROTOCOL_NUMBERS[keyword]
    return _is_ip() & (col("proto") == number)


def _is_ip() -> Expr:
    return col("etype").is_in([EtherType.IPV4, EtherType.IPV6])


def _sides(direction: str | None) -> tuple[str, ...]:
    return ("s",) if direction == "src" else ("d",) if direction == "dst" else ("s", "d")


def _either(direction: str | None, make: Callable[[str], Expr]) -> Expr:
    """Combine a per-side test: one side, either side, or both with ``src and dst``."""
    expressions = [make(side) for side in _sides(direction)]
    result = expressions[0]
    for expression in expressions[1:]:
        result = result & expression if direction == "src and dst" else result | expression
    return result


def _address_class(keyword: str, direction: str | None) -> Expr:
    """multicast or broadcast destination (or source, with ``src``)."""
    direction = direction or "dst"
    if keyword == "multicast":
        networks = [ipaddress.ip_network(text) for text in MULTICAST_NETWORKS]

        def inside(side: str) -> Expr:
            column = col(f"{side}addr")
            tests = [(column >= pack_address(str(network.network_address)))
                     & (column <= pack_address(str(network.broadcast_address)))
                     for network in networks]
            return tests[0] | tests[1]

        return _either(direction, inside)

    def broadcast(side: str) -> Expr:
        return ((col(f"{side}addr") == pack_address(BROADCAST_ADDRESS))
                | (col(f"{side}mac") == BROADCAST_MAC))

    return _either(direction, broadcast)


def _record_keyword(keyword: str) -> Expr:
    """TCP state, flgs and ICMP type keywords, evaluated on what a record carries."""
    if keyword in ICMP_KEYWORDS:
        version4, version6 = ICMP_KEYWORDS[keyword]
        icmp_type = col("sport") >> 8
        return _is_ip() & (((col("proto") == 1) & icmp_type.is_in(list(version4)))
                           | ((col("proto") == 58) & icmp_type.is_in(list(version6))))
    if keyword in FLAG_KEYWORDS:
        position, letters = FLAG_KEYWORDS[keyword]
        letter = col("flgs").char_at(position)
        return letter.is_in(list(letters))
    both_ways = (col("spkts").fill_null(0) > 0) & (col("dpkts").fill_null(0) > 0)
    if keyword == "con":
        return both_ways
    state = col("state")
    tcp = _is_ip() & (col("proto") == TCP)
    tests = {
        "syn": ~col("dir").contains("?"),
        "synack": state.is_in(["ACC", "CON", "FIN", "CLO"]) & both_ways
        & ~col("dir").contains("?"),
        "fin": state.is_in(["FIN", "CLO"]),
        "finack": state.is_in(["FIN", "CLO"]) & both_ways,
        "rst": state == "RST",
        "reset": state == "RST",
        "est": state.is_in(["CON", "FIN", "CLO"]),
        "timeout": state == "TIM",
    }
    return tcp & tests[keyword]


def _build(parser: _Parser, template: _Template, value: str) -> Expr:
    """Turn a keyword with its qualifiers and one value into an expression."""
    builders = {"host": _host, "net": _net, "port": _port, "proto": _proto_value,
                "co": _country, "srcid": _srcid, "vlan": _vlan, "ether": _ether}
    try:
        if template.keyword in builders:
            return builders[template.keyword](template, value)
        return _counter(template, value)
    except ValueError as error:
        parser.fail(str(error), back=1)
        raise  # unreachable: fail() raises


def _host(template: _Template, value: str) -> Expr:
    try:
        packed = pack_address(value)
    except ValueError:
        raise ValueError("expected an IPv4 or IPv6 address") from None
    return _either(template.direction, lambda side: col(f"{side}addr") == packed)


def _net(template: _Template, value: str) -> Expr:
    text = value if "mask" not in template.extra else f"{value}/{template.extra['mask']}"
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError("expected a network such as 10.0.0.0/8") from None
    low = pack_address(str(network.network_address))
    high = pack_address(str(network.broadcast_address))

    def inside(side: str) -> Expr:
        column = col(f"{side}addr")
        return (column >= low) & (column <= high)

    return _either(template.direction, inside)


def _port_range(value: str, protocol: str | None) -> tuple[int, int, tuple[int, ...]]:
    """Return the port range and the IP protocols a port value applies to."""
    protocols = (6, 17) if protocol is None else (_PROTOCOL_NUMBERS[protocol],)
    if re.fullmatch(r"\d+(-\d+)?", value):
        low, _, high = value.partition("-")
        first, last = int(low), int(high or low)
        if last > 65535 or first > last:
            raise ValueError("expected a port from 0 to 65535 or a range such as 53-215")
        return first, last, protocols
    found = []
    for name in ("tcp", "udp") if protocol is None else (protocol,):
        try:
            found.append((socket.getservbyname(value, name), _PROTOCOL_NUMBERS[name]))
        except OSError:
            continue
    if not found:
        raise ValueError("expected a port number, a range or a service name")
    numbers = {number for number, _ in found}
    if len(numbers) > 1:
        raise ValueError("the service name maps to different tcp and udp ports")
    port = numbers.pop()
    return port, port, tuple(number for _, number in found)


def _port(template: _Template, value: str) -> Expr:
    first, last, protocols = _port_range(value, template.protocol)

    def matches(side: str) -> Expr:
        column = col(f"{side}port")
        if first == last:
            return column == first
        return (column >= first) & (column <= last)

    return _is_ip() & col("proto").is_in(list(protocols)) & _either(template.direction,
                                                                      matches)


def _proto_value(template: _Template, value: str) -> Expr:
    number = int(value) if value.isdigit() else _PROTOCOL_NUMBERS.get(value.lower())
    if number is None or number > 255:
        raise ValueError("expected an IP protocol number (0-255) or name")
    return _is_ip() & (col("proto") == number)


def _country(template: _Template, value: str) -> Expr:
    if not re.fullmatch(r"[A-Za-z]{2}", value):
        raise ValueError("expected a two-letter country code")
    return _either(template.direction, lambda side: col(f"{side}co") == value.upper())


def _srcid(template: _Template, value: str) -> Expr:
    return col("srcid") == value


def _vlan(template: _Template, value: str) -> Expr:
    if not value.isdigit() or int(value) > 4095:
        raise ValueError("expected a VLAN id from 0 to 4095")
    return col("vlan") == int(value)


def _ether(template: _Template, value: str) -> Expr:
    if not re.fullmatch(r"[0-9A-Fa-f]{1,2}(:[0-9A-Fa-f]{1,2}){5}", value):
        raise ValueError("expected a MAC address such as 00:11:22:33:44:55")
    packed = bytes(int(part, 16) for part in value.split(":"))
    return _either(template.direction, lambda side: col(f"{side}mac") == packed)


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError("expected a number") from None


def _counter(template: _Template, value: str) -> Expr:
    number = _number(value)
    compare = COMPARISONS[template.comparison]
    keyword = template.keyword
    if keyword == "dur":
        seconds = seconds_between("stime", "ltime")
        return compare(seconds, number)
    if keyword in SCALARS:
        return compare(col(keyword), number)
    source, destination, has_total = COUNTERS[keyword]
    if template.direction == "src":
        return compare(col(source).fill_null(0), number)
    if template.direction == "dst":
        return compare(col(destination).fill_null(0), number)
    if template.direction in ("src or dst", "src and dst"):
        columns = {"s": source, "d": destination}
        return _either(template.direction,
                       lambda side: compare(col(columns[side]).fill_null(0), number))
    if has_total:
        total = col(source).fill_null(0) + col(destination).fill_null(0)
        return compare(total, number)
    return compare(col(source), number) | compare(col(destination), number)
