"""The hardened XML parser: what it refuses (DTDs, entities, other encodings, size) and what it reads."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from gateway.sealing.xmlsafe import XmlRefused, parse_xml

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<batch>&lol4;</batch>"""


def external_entity(url: str) -> bytes:
    return f'<?xml version="1.0"?><!DOCTYPE b [<!ENTITY x SYSTEM "{url}">]><batch>&x;</batch>'.encode()


@pytest.fixture
def web_server() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on 127.0.0.1 that records every path asked for (none may be)."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"secret")

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()


class TestRefused:
    def test_doctype(self) -> None:
        """Any DOCTYPE is refused, even a harmless one."""
        with pytest.raises(XmlRefused, match="has a DTD"):
            parse_xml(b'<?xml version="1.0"?><!DOCTYPE batch><batch/>')

    def test_billion_laughs(self) -> None:
        """Entity expansion never happens: the document is refused before parsing."""
        with pytest.raises(XmlRefused, match="DTD"):
            parse_xml(BILLION_LAUGHS)

    def test_external_entity_file(self) -> None:
        """An external entity naming a local file is refused; the file is not read."""
        with pytest.raises(XmlRefused, match="DTD"):
            parse_xml(external_entity("file:///etc/passwd"))

    def test_external_entity_network(self, web_server: tuple[str, list[str]]) -> None:
        """An external entity naming a URL is refused and the URL is never fetched."""
        url, asked = web_server
        with pytest.raises(XmlRefused, match="DTD"):
            parse_xml(external_entity(f"{url}/leak"))
        assert asked == []

    def test_dtd_hidden_in_utf16(self) -> None:
        """UTF-16 (where a byte scan would not see the DOCTYPE) is refused outright."""
        data = BILLION_LAUGHS.decode().replace('version="1.0"', 'version="1.0" encoding="UTF-16"').encode("utf-16")
        with pytest.raises(XmlRefused, match="not UTF-8"):
            parse_xml(data)

    def test_other_declared_encoding(self) -> None:
        with pytest.raises(XmlRefused, match="only UTF-8"):
            parse_xml('<?xml version="1.0" encoding="GBK"?><batch>处罚</batch>'.encode("gbk"))

    def test_too_many_bytes(self) -> None:
        with pytest.raises(XmlRefused, match="at most 100 are accepted"):
            parse_xml(b"<batch>" + b"x" * 200 + b"</batch>", max_bytes=100)

    def test_too_many_elements(self) -> None:
        with pytest.raises(XmlRefused, match="more than 50 elements"):
            parse_xml(b"<batch>" + b"<r/>" * 60 + b"</batch>", max_elements=50)

    def test_too_deep(self) -> None:
        """libxml2's depth limit stays on (huge_tree off)."""
        with pytest.raises(XmlRefused, match="not well-formed"):
            parse_xml(b"<a>" * 300_000 + b"</a>" * 300_000, max_bytes=10_000_000)

    def test_malformed(self) -> None:
        with pytest.raises(XmlRefused, match="request body is not well-formed"):
            parse_xml(b"<batch><record></batch>", "request body")


class TestAccepted:
    def test_plain_document(self) -> None:
        """Ordinary UTF-8 XML with Chinese text parses, with its text intact."""
        text = '<?xml version="1.0" encoding="UTF-8"?><batch n="1"><f>苏市监罚〔2026〕1号</f></batch>'
        root = parse_xml(text.encode())
        assert root.tag == "batch" and root.findtext("f") == "苏市监罚〔2026〕1号" and root.get("n") == "1"

    def test_predefined_entities(self) -> None:
        """The five predefined XML entities and character references are not DTD entities: they still work."""
        root = parse_xml(b"<batch>a &amp; b &#x4E2D;</batch>")
        assert root.text == "a & b 中"
