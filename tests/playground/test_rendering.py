"""Model output is untrusted: rendered Markdown must never carry script, handlers or javascript: links."""

from html.parser import HTMLParser

from playground.rendering import render_markdown


def test_script_in_answer_is_shown_as_text_not_executed():
    html = render_markdown("Hi <script>alert(1)</script> there")
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def _elements(html: str) -> list[tuple[str, dict]]:
    found = []

    class Collector(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, dict(attrs)))

    Collector().feed(html)
    return found


def test_event_handlers_and_javascript_links_are_dropped():
    html = render_markdown(
        '<img src=x onerror="alert(1)"> [click](javascript:alert(1)) <a href="javascript:x">y</a>'
        "\n\n<div onclick=alert(1)>z</div>"
    )
    elements = _elements(html)
    assert {tag for tag, _ in elements} <= {"p", "a", "br"}
    for _tag, attrs in elements:
        assert not any(name.startswith("on") for name in attrs)
        assert not (attrs.get("href") or "").lower().startswith("javascript")


def test_code_blocks_keep_their_text_exactly():
    html = render_markdown("```python\nif a < b and c > d:\n    print('<b>')\n```")
    assert '<pre><code class="language-python">' in html
    assert "if a &lt; b and c &gt; d:" in html
    assert "print('&lt;b&gt;')" in html


def test_markdown_structure_and_safe_links_survive():
    html = render_markdown("**bold** and `code`\n\n- one\n- two\n\n[docs](https://example.com)")
    assert "<strong>bold</strong>" in html and "<code>code</code>" in html
    assert "<li>one</li>" in html
    assert '<a href="https://example.com" rel="noopener noreferrer nofollow">docs</a>' in html


def test_empty_answer_renders_nothing():
    assert render_markdown("") == ""
