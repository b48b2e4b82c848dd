"""The READMEs' links hold: every relative link names a file of the repository, every ``#anchor`` a heading of
the file it points into (GitHub's heading ids), and the Chinese README follows the English one's outline."""
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READMES = ("README.md", "README_CN.md")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def prose(path):
    """The lines of a Markdown file outside fenced code blocks, with inline code removed."""
    lines, fenced = [], False
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.lstrip().startswith("```"):
                fenced = not fenced
            elif not fenced:
                lines.append(re.sub(r"`[^`]*`", lambda m: m.group(0).strip("`"), line.rstrip("\n")))
    return lines


def headings(path):
    """(level, GitHub id) of every heading, ids numbered as GitHub numbers repeated ones."""
    seen, result = {}, []
    for line in prose(path):
        match = re.match(r"(#{1,6})\s+(.*)", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(2).strip().lower()).replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            result.append((len(match.group(1)), slug if count == 0 else f"{slug}-{count}"))
    return result


def links(path):
    return LINK.findall("\n".join(prose(path)))  # a link's text may wrap onto the next line


@pytest.mark.parametrize("readme", READMES)
def test_relative_links_and_anchors_resolve(readme):
    broken = []
    for target in links(os.path.join(ROOT, readme)):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        full = os.path.normpath(os.path.join(ROOT, path or readme))
        if not os.path.exists(full):
            broken.append(f"{target}: no file {path}")
        elif anchor and anchor not in {slug for _, slug in headings(full)}:
            broken.append(f"{target}: no heading #{anchor} in {path or readme}")
    assert not broken, f"{readme}: " + "; ".join(broken)


def test_the_chinese_readme_has_the_english_outline():
    english, chinese = (headings(os.path.join(ROOT, name)) for name in READMES)
    assert [level for level, _ in chinese] == [level for level, _ in english]
    assert len(links(os.path.join(ROOT, READMES[1]))) == len(links(os.path.join(ROOT, READMES[0])))
