import pytest

from persalign.errors import ConfigError
from persalign.registry import Registry


def test_register_get_and_summary_from_docstring():
    reg: Registry[type] = Registry("thing")

    @reg.register("alpha")
    class Alpha:
        """First line is the summary.

        More text.
        """

    @reg.register("beta", summary="explicit")
    class Beta: ...

    assert reg.get("alpha") is Alpha
    assert reg.names() == ["alpha", "beta"]
    assert [e.summary for e in reg.entries()] == ["First line is the summary.", "explicit"]
    assert "beta" in reg and len(reg) == 2


def test_unknown_name_suggests_the_closest():
    reg: Registry[int] = Registry("reward method")
    reg.register("global-rm")(1)
    reg.register("lore")(2)
    with pytest.raises(ConfigError, match=r"did you mean 'global-rm'\?.*known: global-rm, lore"):
        reg.get("global-rn")
    with pytest.raises(ConfigError) as info:
        reg.get("zzzzzz")
    assert "did you mean" not in str(info.value)


def test_double_registration_is_a_bug():
    reg: Registry[int] = Registry("thing")
    reg.register("a")(1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(2)


def test_autoload_imports_registering_modules_on_first_lookup():
    from persalign.data.registry import BUILDERS

    assert set(BUILDERS.names()) == {"tldr", "prism", "pref-lamp", "pref-acl", "jsonl", "sim"}
    assert "tldr" in BUILDERS
