"""Both languages, everywhere: every console text is marked for translation and has a zh-Hans translation.

Three nets, each for a way English leaks onto a Chinese page:
- a template text (or title, placeholder, aria-label, data-confirm) outside ``{% trans %}``: the templates are read
  with Django's own template lexer, so what a translator would never see is named with its file;
- a marked message with no translation, or a fuzzy one: ``makemessages`` runs on a copy of the catalogue, exactly
  as a translator would, and every entry must have a reviewed ``msgstr`` (and ``msgfmt --check`` must accept it);
- a text stored in a row (timeline, ledger) or a choice shown by its code: the pages are rendered in zh-Hans and
  searched for the English they used to show.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.template.base import Lexer, TokenType
from django.test import override_settings
from django.urls import reverse
from django.utils import translation

from tests.factories import UserFactory
from tests.support.text import shown_texts, visible_text

ROOT = Path(settings.BASE_DIR)
PO = ROOT / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"
APPS = ("templates", "tenancy", "catalog", "deployments", "metering", "billing", "playground", "maas", "core")

# Words that stay as they are on a Chinese page: the product's name, units, formats and languages' names.
KEPT = {"MaaS", "CSV", "GB", "GiB", "MiB", "vCPU", "ms", "tok", "RPM", "TPM", "curl", "Python", "JavaScript"}
_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]+")  # two letters or more: a unit's B or s is no word


def untranslated_texts(source: str) -> list[str]:
    """Texts of a template that no ``{% trans %}``/``{% blocktrans %}`` covers, with Latin words left in them.

    Tags and variables become a placeholder (their output is either translated or data), translated blocks and
    comments are dropped, and what is left is read as HTML.
    """
    kept: list[str] = []
    depth, in_comment = 0, False
    for token in Lexer(source).tokenize():
        if token.token_type == TokenType.BLOCK:
            name = token.contents.split()[0]
            if name in ("blocktrans", "blocktranslate"):
                depth += 1
            elif name in ("endblocktrans", "endblocktranslate"):
                depth -= 1
                continue
            elif name == "comment":
                in_comment = True
            elif name == "endcomment":
                in_comment = False
                continue
        if depth and token.token_type != TokenType.BLOCK or in_comment:
            continue
        if token.token_type == TokenType.TEXT:
            kept.append(token.contents)
        elif token.token_type in (TokenType.BLOCK, TokenType.VAR):
            kept.append(" \x00 " if not depth or token.contents.split()[0].startswith("blocktrans") else "")
    return [
        " ".join(text.replace("\x00", "…").split())
        for text in shown_texts("".join(kept))
        if any(word not in KEPT for word in _WORD.findall(text.replace("\x00", " ")))
    ]


def console_templates() -> list[Path]:
    return sorted(p for app in APPS for p in (ROOT / app).rglob("templates/**/*.html"))


def test_the_template_check_finds_text_outside_trans():
    template = """{% load i18n %}<h1>{% trans "Billing" %}</h1><p title="Your balance">{{ x }} left</p>
    {% blocktrans %}Translated {{ x }}{% endblocktrans %}<pre>curl -H "Authorization"</pre>{# Note #}"""
    assert untranslated_texts(template) == ["Your balance", "… left"]


def test_every_console_template_text_is_marked_for_translation():
    templates = console_templates()
    assert len(templates) > 40
    leaks = {str(p.relative_to(ROOT)): found for p in templates if (found := untranslated_texts(p.read_text()))}
    assert leaks == {}


def _po_entries(path: Path) -> list[tuple[str, str, bool]]:
    """(msgid, every msgstr joined, fuzzy) for each entry of a .po, read with gettext's own msgcat (no wrapping)."""
    flat = subprocess.run(
        ["msgcat", "--no-wrap", "--no-location", str(path)], capture_output=True, text=True, check=True
    ).stdout
    entries = []
    for block in flat.split("\n\n"):
        lines = block.splitlines()
        msgid = next((line[7:-1] for line in lines if line.startswith("msgid ")), None)
        if msgid is None or msgid == "":  # the header
            continue
        strs = [line.split(" ", 1)[1][1:-1] for line in lines if line.startswith("msgstr")]
        fuzzy = any(line.startswith("#,") and "fuzzy" in line for line in lines)
        entries.append((msgid, "".join(s for s in strs if s) if all(strs) else "", fuzzy))
    return entries


def _makemessages(sources: Path, into: Path) -> list[tuple[str, str, bool]]:
    """Run ``makemessages`` as a translator would, on ``sources`` (the working directory it reads), merging into a copy
    of the zh-Hans catalogue under ``into``; the entries of the merged copy. The real catalogue is never written."""
    copy = into / "zh_Hans" / "LC_MESSAGES" / "django.po"
    copy.parent.mkdir(parents=True)
    shutil.copy(PO, copy)
    cwd = Path.cwd()
    os.chdir(sources)
    try:
        with override_settings(LOCALE_PATHS=[into]), translation.override(None):
            call_command("makemessages", locale=["zh_Hans"], no_obsolete=True, verbosity=0)
    finally:
        os.chdir(cwd)
    check = subprocess.run(["msgfmt", "--check-format", "-o", "/dev/null", str(copy)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    return _po_entries(copy)


def test_every_marked_message_has_a_reviewed_zh_hans_translation(tmp_path):
    """A message marked in the code but new to the catalogue is an empty entry, a changed one a fuzzy entry."""
    sources = tmp_path / "src"  # makemessages writes beside the sources it reads: a copy keeps the real tree as is
    shutil.copytree(
        ROOT,
        sources,
        ignore=shutil.ignore_patterns(
            ".*", "__pycache__", "*.egg-info", "node_modules", "locale", "tests", "bench", "simulator", "static", "docs"
        ),
    )
    entries = _makemessages(sources, tmp_path / "locale")
    assert len(entries) > 600
    untranslated = [msgid for msgid, msgstr, _fuzzy in entries if not msgstr]
    fuzzy = [msgid for msgid, _msgstr, is_fuzzy in entries if is_fuzzy]
    assert (untranslated, fuzzy) == ([], [])


def test_the_catalogue_check_sees_a_new_message(tmp_path):
    """The same check, on sources with one message the catalogue does not have, finds exactly that one."""
    sources = tmp_path / "src" / "probe" / "templates"
    sources.mkdir(parents=True)
    (sources / "probe.html").write_text('{% load i18n %}{% trans "A sentence no translator has seen yet" %}')
    entries = _makemessages(tmp_path / "src", tmp_path / "locale")
    assert [msgid for msgid, msgstr, _f in entries if not msgstr] == ["A sentence no translator has seen yet"]


def test_model_tags_are_shown_in_the_readers_language(client, catalog):
    page = client.get(reverse("catalog:marketplace"), HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    tags = re.findall(r'<span class="tag">([^<]*)</span>', page)
    assert tags and "文本生成" in tags and [t for t in tags if _WORD.search(t)] == []
    detail = client.get(reverse("catalog:model-detail", args=["bge-m3"]), HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert re.findall(r'<span class="tag">([^<]*)</span>', detail.content.decode()) == ["向量"]


def test_admin_names_models_in_chinese_without_english_plurals(db, client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    page = visible_text(client.get(reverse("admin:index"), HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode())
    assert "模型" in page and "集群" in page and "组织" in page
    assert re.findall(r"[\u4e00-\u9fff]s\b", page) == []  # "模型s", "组织s"
    assert [w for w in ("Clusters", "Services", "Regions", "Deployments") if w in page] == []


def test_admin_columns_and_filters_are_named_in_chinese():
    """The admin's list columns and filters are named by field verbose names (a field without one shows its name)."""
    from django.contrib import admin
    from django.contrib.admin.utils import label_for_field

    ours = {"maas", "catalog", "deployments", "gateway", "billing", "playground"}
    english = {}
    with translation.override("zh-hans"):
        for model, model_admin in admin.site._registry.items():
            if model._meta.app_label not in ours:
                continue
            names = [n for n in (*model_admin.list_display, *model_admin.list_filter) if isinstance(n, str)]
            for name in names:
                if name == "__str__":
                    continue
                label = str(label_for_field(name, model, model_admin))
                if any(
                    word not in KEPT | {"ID", "GPU", "Token", "tokens", "API", "Stripe"}
                    for word in _WORD.findall(label)
                ):
                    english[f"{model._meta.label}.{name}"] = label
    assert english == {}


def test_visible_text_leaves_out_markup_and_code():
    assert visible_text('<p title="T">a <b>b</b></p><pre>x</pre><script>y</script>') == "T a b"
