"""The recipe config: defaults <- YAML <- key=value, with errors before anything starts."""

from dataclasses import dataclass, field

import pytest

from recipes.config import ConfigError, load_config, save_config


@dataclass
class Inner:
    lr: float = 1e-5
    n: int = 4


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    name: str = "default"
    tools: dict = field(default_factory=lambda: {"pose_estimation": {}})


def test_layers_apply_in_order(tmp_path):
    yaml = tmp_path / "c.yaml"
    yaml.write_text("inner:\n  lr: 0.5\n  n: 8\nname: from_yaml\n")
    cfg = load_config(Outer, ["inner.n=16"], yaml)
    # lr from YAML, n from the override (beats YAML), the name from YAML
    assert (cfg.inner.lr, cfg.inner.n, cfg.name) == (0.5, 16, "from_yaml")
    assert isinstance(cfg, Outer) and isinstance(cfg.inner, Inner)


def test_config_key_replaces_default_yaml(tmp_path):
    default, other = tmp_path / "d.yaml", tmp_path / "o.yaml"
    default.write_text("name: d\n")
    other.write_text("name: o\n")
    assert load_config(Outer, [f"config={other}"], default).name == "o"
    assert load_config(Outer, [], default).name == "d"
    assert load_config(Outer, [], None).name == "default"


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["inner.nope=1"], "nope"),
        (["inner.n=abc"], "inner.n"),
        (["justaword"], "key=value"),
        (["config=/no/such/file.yaml"], "/no/such/file.yaml"),
    ],
)
def test_bad_config_is_refused_with_the_key(argv, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(Outer, argv, None)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(Outer, ["inner.lr=0.25", "tools.pose_estimation.device=cuda"], None)
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(Outer, [], tmp_path / "config.yaml")
    assert again == cfg and again.tools == {"pose_estimation": {"device": "cuda"}}


def test_a_yaml_mapping_replaces_a_dict_default_and_overrides_merge_into_it(tmp_path):
    @dataclass
    class WithTools:
        inner: Inner = field(default_factory=Inner)
        tools: dict = field(default_factory=lambda: {"pose_estimation": {}, "human_detection": {"conf": 0.3}})

    yaml = tmp_path / "c.yaml"
    yaml.write_text("inner:\n  lr: 0.5\ntools:\n  action_explanation: {top_k: 2}\n")
    # the file lists one tool: only that tool (the defaults are not merged in); the dataclass field keeps merging
    cfg = load_config(WithTools, [], yaml)
    assert cfg.tools == {"action_explanation": {"top_k": 2}} and (cfg.inner.lr, cfg.inner.n) == (0.5, 4)
    cfg = load_config(WithTools, ["tools.pose_estimation={}", "tools.action_explanation.top_k=3"], yaml)
    assert cfg.tools == {"action_explanation": {"top_k": 3}, "pose_estimation": {}}
    assert load_config(WithTools, [], None).tools == {"pose_estimation": {}, "human_detection": {"conf": 0.3}}


def _config_classes(cls, seen=None):
    import dataclasses
    import typing

    seen = set() if seen is None else seen
    if cls in seen:
        return seen
    seen.add(cls)
    for hint in typing.get_type_hints(cls).values():
        for inner in (hint, *typing.get_args(hint)):
            if dataclasses.is_dataclass(inner):
                _config_classes(inner, seen)
    return seen


def test_every_field_of_every_recipe_config_has_a_docstring():
    import dataclasses

    from recipes.config import field_docs
    from recipes.grpo import GrpoConfig
    from recipes.sft import SftConfig

    classes = _config_classes(GrpoConfig) | _config_classes(SftConfig)
    names = {c.__name__ for c in classes}
    # the five components, and what they hold
    assert {
        "RolloutConfig",
        "TrainerConfig",
        "RewardsConfig",
        "EvalConfig",
        "RunConfig",
        "ToolPoolConfig",
        "RewardSpec",
        "ColdStartConfig",
        "SftDataConfig",
    } <= names
    undocumented = [
        f"{c.__name__}.{f.name}" for c in classes for f in dataclasses.fields(c) if not field_docs(c).get(f.name)
    ]
    assert undocumented == []
    assert all((c.__doc__ or "").strip() and not c.__doc__.startswith(c.__name__ + "(") for c in classes)
