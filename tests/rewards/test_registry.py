"""The reward registry: registration, duplicates, lookups by name and by dotted path to a plugin outside the repo."""

from __future__ import annotations

import sys
import textwrap
import uuid

import pytest

from rewards.registry import RewardNotFoundError, available_rewards, get_reward, register, unregister


@pytest.fixture
def fresh_name():
    """A reward name no other test uses, unregistered afterwards."""
    name = f"test_reward_{uuid.uuid4().hex[:8]}"
    yield name
    unregister(name)


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A folder outside the repo on sys.path, with a plugin module written into it."""
    module = f"mymod_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(
            """
            from rewards.registry import register

            def myreward(traj, record, bonus=0.0):
                return 0.25 + bonus

            def batch_reward(trajs, records):
                return [1.0] * len(trajs)
            batch_reward.batched = True

            class Loaded:
                loads = 0

                def __init__(self):
                    type(self).loads += 1

                def __call__(self, traj, record):
                    return float(type(self).loads)

            NOT_CALLABLE = 3
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield module
    sys.modules.pop(module, None)


def test_builtins_are_registered():
    assert {"accuracy", "format", "tool_usage"} <= set(available_rewards())
    assert available_rewards() == sorted(available_rewards())
    reward = get_reward("accuracy")
    assert reward.name == "accuracy" and not reward.batched
    assert "rewards.videostar" in reward.origin


def test_register_and_look_up(fresh_name):
    @register(fresh_name, batched=True)
    def scorer(trajs, records):
        return [0.5 for _ in trajs]

    reward = get_reward(fresh_name)
    assert reward.fn is scorer and reward.batched and scorer.batched is True
    assert reward.load() is scorer
    assert fresh_name in available_rewards()


def test_duplicate_registration_is_refused_naming_both_places(fresh_name):
    @register(fresh_name)
    def first(traj, record):
        return 1.0

    with pytest.raises(ValueError) as err:

        @register(fresh_name)
        def second(traj, record):
            return 0.0

    msg = str(err.value)
    assert fresh_name in msg and "first" in msg and "second" in msg and "test_registry.py" in msg
    assert get_reward(fresh_name).fn is first  # the first one stays


def test_same_definition_registered_again_is_allowed(fresh_name):
    def scorer(traj, record):
        return 1.0

    register(fresh_name)(scorer)
    register(fresh_name)(scorer)  # e.g. its module reloaded
    assert get_reward(fresh_name).fn is scorer


def test_builtin_name_cannot_be_taken():
    with pytest.raises(ValueError, match="already registered by rewards.videostar:accuracy"):

        @register("accuracy")
        def accuracy(traj, record):
            return 1.0


@pytest.mark.parametrize("bad", ["", "a:b", None])
def test_bad_names_are_refused(bad):
    with pytest.raises(ValueError):
        register(bad)


def test_unknown_name_lists_available():
    with pytest.raises(RewardNotFoundError) as err:
        get_reward("acuracy")
    msg = str(err.value)
    assert "'acuracy'" in msg and "accuracy" in msg and "format" in msg and "tool_usage" in msg
    assert isinstance(err.value, ValueError)


def test_dotted_without_colon_gets_a_hint():
    with pytest.raises(RewardNotFoundError, match="package.module:function"):
        get_reward("my_pkg.my_mod.my_reward")


def test_dotted_path_plugin(plugin_dir):
    reward = get_reward(f"{plugin_dir}:myreward")
    assert reward.name == f"{plugin_dir}:myreward" and not reward.batched
    assert reward.load()(None, {}, bonus=0.5) == 0.75
    assert get_reward(f"{plugin_dir}:batch_reward").batched


def test_dotted_path_class_plugin_is_instantiated_by_load(plugin_dir):
    reward = get_reward(f"{plugin_dir}:Loaded")
    assert reward.fn.loads == 0  # resolving does not load
    scorer = reward.load()
    assert scorer(None, {}) == 1.0 and reward.fn.loads == 1


def test_missing_module_is_named():
    with pytest.raises(RewardNotFoundError, match="module 'no_such_pkg_xyz.mod' not found"):
        get_reward("no_such_pkg_xyz.mod:fn")


def test_missing_attribute_is_named(plugin_dir):
    with pytest.raises(RewardNotFoundError, match=f"module '{plugin_dir}' has no attribute 'nope'"):
        get_reward(f"{plugin_dir}:nope")


def test_not_callable_attribute_is_refused(plugin_dir):
    with pytest.raises(RewardNotFoundError, match="'NOT_CALLABLE' is a int"):
        get_reward(f"{plugin_dir}:NOT_CALLABLE")


def test_plugin_module_with_a_broken_import_says_so(tmp_path, monkeypatch):
    module = f"broken_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text("import no_such_dependency_xyz\n\ndef r(traj, record):\n    return 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match=f"importing module '{module}' failed.*no_such_dependency_xyz"):
        get_reward(f"{module}:r")
