"""Experiment configs: strict keys and types named in the error, --set overrides, the plan."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from persalign.data import BuildOptions
from persalign.errors import ConfigError
from persalign.runs.benchmark_builds import PreparedBenchmark
from persalign.runs.config import (
    BenchmarkConfig,
    RunConfig,
    config_hash,
    load_config,
    parse_config,
)
from persalign.runs.plan import make_plan, slug

REPO = Path(__file__).resolve().parents[2]


def raw_config(**extra) -> dict:
    raw = {
        "name": "t",
        "seeds": [0, 1],
        "benchmarks": {"toy": {"path": "bench"}},
        "reward": {"backbone": "some/backbone", "settings": {"max_steps": 3}},
        "methods": {"global-rm": None, "lore": {"latent_dim": 4}},
        "policies": {"small": {"spec": "some/policy", "params_m": 500}},
        "baselines": {"icl": [2, 4], "icl_rag": [4]},
    }
    raw.update(extra)
    return raw


def write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def error_of(tmp_path: Path, raw: dict, overrides: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, raw), overrides)
    return str(info.value)


def test_a_valid_config_resolves_paths_and_fills_defaults(tmp_path):
    config = load_config(write(tmp_path, raw_config()))
    assert config.benchmarks["toy"].path == str((tmp_path / "bench").resolve())
    assert config.lam.grid and config.decoding.k == 10 and config.seeds == [0, 1]
    assert config.policies["small"].label() == "500M"
    name, decoder, options = config.method_options("lore")
    assert (name, decoder) == ("lore", "args")
    assert options == {"backbone": "some/backbone", "max_steps": 3, "latent_dim": 4}


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"decodng": {}}, "decodng: unknown key"),
        ({"decoding": {"max_new_tokns": 3}}, "decoding.max_new_tokns: unknown key"),
        ({"lambda": {"grid": [0], "objectiv": "x"}}, "lambda.objectiv: unknown key"),
        ({"policies": {"p": {"spec": "x", "params_m": 1, "gpu": 1}}}, "policies.p.gpu"),
        ({"methods": {"lore": {"latnt_dim": 4}}}, "methods.lore.latnt_dim: unknown key"),
        ({"reward": {"settings": {"max_stepz": 1}}}, "reward.settings.max_stepz: unknown key"),
        ({"benchmarks": {"toy": {"path": "b", "min_itemz": 3}}}, "benchmarks.toy.min_itemz"),
    ],
)
def test_an_unknown_key_is_an_error_naming_it(tmp_path, change, key):
    assert key in error_of(tmp_path, raw_config(**change))


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"decoding": {"max_new_tokens": "many"}}, "decoding.max_new_tokens"),
        ({"seeds": "zero"}, "seeds"),
        ({"methods": {"lore": {"latent_dim": "big"}}}, "methods.lore.latent_dim"),
        ({"policies": {"p": {"spec": "x"}}}, "policies.p.params_m: missing"),
        ({"baselines": {"icl": [0]}}, "baselines.icl"),
        ({"seeds": [1, 1]}, "seeds"),
        ({"methods": {"lorx": None}}, "did you mean 'lore'"),
        ({"methods": {"lore": {"seed": 3}}}, "methods.lore.seed: set by the grid"),
        ({"methods": {"icl": None}}, "name the baselines"),
        (
            {"policies": {"q2.5": {"spec": "x", "params_m": 1}}},
            "policies: Value error, label 'q2.5'",
        ),
    ],
)
def test_a_wrong_value_is_an_error_naming_the_key(tmp_path, change, key):
    assert key in error_of(tmp_path, raw_config(**change))


def test_set_overrides_nested_keys_with_yaml_types(tmp_path):
    path = write(tmp_path, raw_config())
    config = load_config(
        path,
        [
            "decoding.k=3",
            'decoding.stop=["\\n"]',
            "seeds=[5]",
            "methods.lore.max_steps=7",
            "methods.mpu.head_width=8",
            "lambda.grid=[0.5]",
            "baselines.zero_shot=false",
        ],
    )
    assert config.decoding.k == 3 and config.decoding.stop == ["\n"]
    assert config.seeds == [5] and config.lam.grid == [0.5] and not config.baselines.zero_shot
    assert config.method_options("lore")[2]["max_steps"] == 7
    assert config.method_options("mpu")[2]["head_width"] == 8  # a new method entry
    assert config_hash(config) != config_hash(load_config(path))
    assert "decoding.k" in error_of(tmp_path, raw_config(), ["decoding.k=abc"])
    assert "decoding.kk: unknown key" in error_of(tmp_path, raw_config(), ["decoding.kk=3"])
    assert "not a mapping" in error_of(tmp_path, raw_config(), ["seeds.x=3"])


def test_path_and_build_options_do_not_mix(tmp_path):
    raw = raw_config(benchmarks={"toy": {"path": "b", "max_items": 3}})
    assert "drop the build options" in error_of(tmp_path, raw)


def test_every_config_field_has_a_description():
    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            annotation = field.annotation
            inner = getattr(annotation, "__args__", ())
            for sub in (annotation, *inner):
                if isinstance(sub, type) and hasattr(sub, "model_fields"):
                    walk(sub)

    walk(RunConfig)


@pytest.mark.parametrize(
    "path",
    sorted(str(p.relative_to(REPO)) for p in REPO.glob("configs/**/*.yaml")),
)
def test_shipped_configs_are_valid(path, monkeypatch):
    # The TL;DR config names PAL's split file through $PERSALIGN_SHARED_DATA (never copied here).
    monkeypatch.setenv("PERSALIGN_SHARED_DATA", os.environ.get("PERSALIGN_SHARED_DATA", "/data"))
    config = load_config(REPO / path)
    assert config.methods and config.policies and config.seeds
    assert config_hash(config) == config_hash(load_config(REPO / path))


def test_paper_configs_exist():
    names = {p.name for p in REPO.glob("configs/paper/*.yaml")}
    assert {"tldr.yaml", "prism.yaml", "pref_lamp.yaml"} <= names


def plan_of(config: RunConfig):
    bench = {"toy": PreparedBenchmark("toy", Path("/b"), "h")}
    return make_plan(config, bench)


def test_sampled_baselines_are_planned_at_every_seed(tmp_path):
    raw = raw_config()
    raw["decoding"] = {**raw.get("decoding", {}), "mode": "sample", "temperature": 0.7}
    cells = {j.id for j in plan_of(parse_config(raw, base_dir=tmp_path)) if j.kind == "cell"}
    for row in ("zero-shot", "icl-rag-4", "icl-2"):
        assert {f"toy__small__{row}__s{s}" for s in (0, 1)} <= cells, row


def test_the_plan_shares_one_model_per_method_and_seed_across_policies(tmp_path):
    raw = raw_config(
        policies={
            "small": {"spec": "org/small", "params_m": 500},
            "large": {"spec": "org/large", "params_m": 7000},
        }
    )
    jobs = plan_of(parse_config(raw, base_dir=tmp_path))
    models = [j for j in jobs if j.kind == "model"]
    cells = {j.id: j for j in jobs if j.kind == "cell"}
    assert sorted(m.id for m in models) == sorted(
        f"toy__{m}__some-backbone__s{s}" for m in ("global-rm", "lore") for s in (0, 1)
    )
    per_seed = {"icl-2", "icl-4", "global-rm", "lore"}  # icl draws its demonstrations
    once = {"zero-shot", "icl-rag-4"}  # greedy, nothing drawn: the same at every seed
    assert set(cells) == {
        f"toy__{p}__{c}__s{s}" for p in ("small", "large") for c in per_seed for s in (0, 1)
    } | {f"toy__{p}__{c}__s0" for p in ("small", "large") for c in once}
    for policy in ("small", "large"):
        cell = cells[f"toy__{policy}__lore__s1"]
        assert cell.needs == ("toy__lore__some-backbone__s1", f"toy__{policy}__zero-shot__s0")
        assert cell.spec.zero_shot.id == f"toy__{policy}__zero-shot__s0"
    order = [j.id for j in jobs]
    for job in jobs:  # dependencies come first
        assert all(order.index(n) < order.index(job.id) for n in job.needs)
    assert cells["toy__large__lore__s0"].spec.policy.scale == "7B"


def test_spec_hashes_change_only_with_what_a_job_depends_on(tmp_path):
    base = {j.id: j.spec_hash for j in plan_of(parse_config(raw_config(), base_dir=tmp_path))}
    k = {
        j.id: j.spec_hash
        for j in plan_of(parse_config(raw_config(), overrides=["decoding.k=3"], base_dir=tmp_path))
    }
    steps = {
        j.id: j.spec_hash
        for j in plan_of(
            parse_config(raw_config(), overrides=["methods.lore.max_steps=9"], base_dir=tmp_path)
        )
    }
    changed_k = {i for i in base if base[i] != k[i]}
    assert changed_k == {f"toy__small__{m}__s{s}" for m in ("global-rm", "lore") for s in (0, 1)}
    changed_steps = {i for i in base if base[i] != steps[i]}
    assert changed_steps == {f"toy__lore__some-backbone__s{s}" for s in (0, 1)} | {
        f"toy__small__lore__s{s}" for s in (0, 1)
    }


def test_slugs_of_model_specs():
    assert slug("bundled:smollm2-135m-instruct") == "bundled-smollm2-135m-instruct"
    assert slug("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen-Qwen2.5-0.5B-Instruct"
    local = slug("/tmp/a/tiny-lm")
    assert local.startswith("tiny-lm-") and local != slug("/tmp/b/tiny-lm")


def test_threads_reach_every_job_but_not_their_specs(tmp_path):
    default = plan_of(parse_config(raw_config(), base_dir=tmp_path))
    one = plan_of(parse_config(raw_config(threads=1), base_dir=tmp_path))
    assert all(j.threads is None for j in default) and all(j.threads == 1 for j in one)
    assert [j.spec_hash for j in one] == [j.spec_hash for j in default]
    assert all(j.to_json()["threads"] == 1 for j in one)


def test_job_specs_are_typed_frozen_and_round_trip_through_json(tmp_path):
    from pydantic import ValidationError

    from persalign.runs.plan import Job
    from persalign.runs.specs import CellJobSpec, ModelJobSpec, parse_spec

    jobs = plan_of(parse_config(raw_config(), base_dir=tmp_path))
    kinds = {type(j.spec) for j in jobs}
    assert kinds == {ModelJobSpec, CellJobSpec}
    for job in jobs:
        again = Job.from_json(job.to_json())
        assert again == job and again.spec_hash == job.spec_hash
        assert type(again.spec) is type(job.spec)
    cell = next(j for j in jobs if j.id == "toy__small__lore__s0")
    assert cell.spec.decoder == "args" and cell.spec.decoder_settings["k"] == 10
    assert "lam" not in cell.spec.decoder_settings  # chosen per cell, never part of the spec
    icl = next(j for j in jobs if j.id == "toy__small__icl-2__s0")
    assert icl.spec.decoder_settings["shots"] == 2 and "k" not in icl.spec.decoder_settings
    with pytest.raises(ValidationError):
        cell.spec.seed = 3  # frozen
    with pytest.raises(ValidationError, match="extra"):
        parse_spec({**cell.spec.to_json(), "typo": 1})


def test_extra_baseline_decoders_become_rows_and_are_checked(tmp_path):
    raw = raw_config(
        baselines={"decoders": {"short": {"decoder": "zero-shot", "max_new_tokens": 3}}}
    )
    jobs = {j.id: j for j in plan_of(parse_config(raw, base_dir=tmp_path))}
    assert "toy__small__short__s1" not in jobs  # greedy zero-shot: planned once
    short = jobs["toy__small__short__s0"].spec
    assert (short.kind, short.method, short.decoder) == ("baseline", "short", "zero-shot")
    assert short.decoder_settings["max_new_tokens"] == 3 and short.decoder_settings["seed"] == 0
    bad = {
        "args": ({"x": {"decoder": "args"}}, "needs a reward model"),
        "unknown key": ({"y": {"decoder": "zero-shot", "kk": 1}}, "baselines.decoders.y.kk"),
        "unknown decoder": ({"z": {"decoder": "zeroshot"}}, "did you mean 'zero-shot'"),
        "clash": ({"lore": {"decoder": "zero-shot"}}, "names a baseline or a method"),
    }
    for decoders, message in bad.values():
        with pytest.raises(ConfigError, match=message):
            parse_config(raw_config(baselines={"decoders": decoders}), base_dir=tmp_path)


def test_plugins_are_imported_before_checking_and_a_missing_one_is_named(tmp_path):
    with pytest.raises(ConfigError, match="plugin 'no_such_plugin_xyz' cannot be imported"):
        parse_config(raw_config(plugins=["no_such_plugin_xyz"]), base_dir=tmp_path)


def test_build_options_are_declared_once_and_typed_in_the_build_spec(tmp_path):
    from persalign.data.registry import BuildFields
    from persalign.runs.specs import BenchmarkBuildSpec

    fields = set(BuildFields.model_fields)
    assert set(BuildOptions.model_fields) == fields
    assert set(BenchmarkConfig.model_fields) == fields | {"dataset", "path"}
    with pytest.raises(ConfigError, match=r"max_items: .*greater than or equal to 1 \(got -1\)"):
        BuildOptions(max_items=-1)
    with pytest.raises(ConfigError, match="split: "):
        BuildOptions(split="sideways")
    bench = BenchmarkConfig(source="src", include=["a.xml"], max_query=2)
    options = bench.build_options()
    assert isinstance(options, BuildOptions) and options.include == ("a.xml",)
    spec = BenchmarkBuildSpec(dataset="pref-acl", **options.model_dump())
    assert spec.to_json()["dataset"] == "pref-acl" and spec.to_json()["include"] == ["a.xml"]
    assert spec.options() == options


def test_frozen_training_of_a_likelihood_method_is_refused_before_anything_runs(tmp_path):
    """backbone_training: frozen in reward.settings reaches GenARM and P-DPO too; the config is
    refused when it is read (naming the method and the fix), not when their model job starts
    (the simulated-users study lost both to that), and a per-method `lora` makes it valid."""
    raw = raw_config(methods={"global-rm": None, "genarm": None, "oracle": None})
    raw["reward"]["settings"] = {**raw["reward"].get("settings", {}), "backbone_training": "frozen"}
    with pytest.raises(ConfigError, match=r"methods\.genarm: genarm: backbone_training='frozen'"):
        parse_config(raw, base_dir=tmp_path)
    raw["methods"]["genarm"] = {"backbone_training": "lora"}
    config = parse_config(raw, base_dir=tmp_path)  # global-rm frozen, genarm lora, oracle either
    assert set(config.methods) == {"global-rm", "genarm", "oracle"}
