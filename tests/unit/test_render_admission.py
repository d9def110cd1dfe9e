"""Which rendered images the render service caches (``SecondRequest``)."""

from __future__ import annotations

from tessera_render.service import SecondRequest


def test_an_image_is_cached_when_asked_for_again() -> None:
    admission = SecondRequest()
    assert not admission.admit("a")
    assert not admission.admit("b")
    assert admission.admit("a")
    assert not admission.admit("a")  # admitted once; the cache answers from now on


def test_only_the_latest_keys_are_remembered() -> None:
    admission = SecondRequest(capacity=2)
    for key in ("a", "b", "c"):
        assert not admission.admit(key)
    assert not admission.admit("a")  # forgotten when "c" came
    assert admission.admit("c")
