"""The name mapping of kbfs.namespace.names: every server file gets one valid, unique entry."""

from __future__ import annotations

import errno

from hypothesis import given
from hypothesis import strategies as st

from kbfs.namespace.names import assign_names, base_display_name, upload_name_error, with_suffix


def test_substitutions_and_specials() -> None:
    assert base_display_name("dir/sub/file.txt") == "dir\u2215sub\u2215file.txt"
    assert base_display_name("nul\0byte.txt") == "nul\u2400byte.txt"
    assert base_display_name("") == "_"
    assert base_display_name(".") == "_."
    assert base_display_name("..") == "_.."
    assert base_display_name(".hidden") == ".hidden"
    assert base_display_name("résumé 日本語 🎉.txt") == "résumé 日本語 🎉.txt"


def test_long_names_are_cut_at_a_character_boundary() -> None:
    name = base_display_name("/" * 200)  # each '/' becomes 3 bytes
    assert len(name.encode()) <= 255
    assert name == "\u2215" * 85


def test_duplicates_lowest_id_keeps_the_plain_name() -> None:
    named = assign_names([(21, "dup.txt", "b"), (20, "dup.txt", "a"), (22, "dup.txt", "c")])
    assert named == {"dup.txt": "a", "dup (#21).txt": "b", "dup (#22).txt": "c"}


def test_suffix_placement() -> None:
    assert with_suffix("archive.tar.gz", 5) == "archive.tar (#5).gz"
    assert with_suffix("noext", 5) == "noext (#5)"
    assert with_suffix(".bashrc", 5) == ".bashrc (#5)"
    assert len(with_suffix("x" * 255, 123456).encode()) <= 255


def test_suffixed_name_already_taken_by_a_real_file() -> None:
    named = assign_names([(1, "a.txt", 1), (2, "a (#3).txt", 2), (3, "a.txt", 3)])
    assert sorted(named.values()) == [1, 2, 3]
    assert named["a.txt"] == 1 and named["a (#3).txt"] == 2


names = st.text(st.characters(codec="utf-8"), max_size=300)


@given(st.lists(st.tuples(st.integers(1, 10_000), names), unique_by=lambda t: t[0]))
def test_every_file_gets_one_valid_unique_name(files: list[tuple[int, str]]) -> None:
    named = assign_names([(fid, name, fid) for fid, name in files])
    assert sorted(named.values()) == sorted(fid for fid, _ in files)
    for name in named:
        assert name not in ("", ".", "..")
        assert "/" not in name and "\0" not in name
        assert len(name.encode("utf-8", "surrogateescape")) <= 255
    # deterministic whatever the input order
    assert assign_names([(f, n, f) for f, n in reversed(files)]) == named


def test_upload_name_checks() -> None:
    assert upload_name_error("a" * 255) is None
    for long_name in ("a" * 256, "é" * 128):
        problem = upload_name_error(long_name)
        assert problem is not None and problem.errno == errno.ENAMETOOLONG
        assert str(problem) == "name longer than 255 bytes"
    problem = upload_name_error("bad\udcff")
    assert problem is not None and problem.errno == errno.EILSEQ
    assert str(problem) == "name is not valid UTF-8"
