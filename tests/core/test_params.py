import pytest

from a2i_core.core.params import ParamsError, load_params, merge_overlay, params_from_dict, read_yaml
from a2i_core.data.ingest import build_candidates
from tests.conftest import OFFLINE_PROFILE, ROOT


def _keys(tree: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        keys.append(f"{prefix}{key}")
        if isinstance(value, dict):
            keys += _keys(value, f"{prefix}{key}.")
    return keys


def test_the_offline_profile_is_an_overlay_of_params_yaml():
    base, overlay = read_yaml(ROOT / "params.yaml"), read_yaml(OFFLINE_PROFILE)
    assert set(_keys(overlay)) <= set(_keys(base)), "an overlay key that params.yaml lacks: a typo, or add it there"
    differing = [k for k in _keys(overlay) if not isinstance(_at(overlay, k), dict)]
    same = [k for k in differing if _at(overlay, k) == _at(base, k)]
    assert not same, f"the overlay repeats params.yaml's values for {same}: keep only what differs"


def _at(tree: dict, dotted: str):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def test_merging_an_overlay():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 3}
    assert merge_overlay(base, {"a": {"c": [5]}}) == {"a": {"b": 1, "c": [5]}, "d": 3}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 3}  # untouched
    assert merge_overlay(base, {"a": {}}) == {"a": {}, "d": 3}  # an empty mapping empties


def test_committed_params_and_offline_profile_are_valid(offline_params):
    real = load_params(ROOT / "params.yaml")
    offline = offline_params
    assert real.diffusion.model == "stabilityai/stable-diffusion-3-medium-diffusers"
    assert offline.diffusion.model == "tiny" and offline.audio_encoder.weights == "tiny"
    assert real.train.w_cos == 0.7 and real.train.w_mse == 0.3


def test_unknown_key_is_named(raw_params):
    raw_params["train"]["learning_rate"] = 0.1
    with pytest.raises(ParamsError, match=r"train\.learning_rate: unknown key"):
        params_from_dict(raw_params)


def test_wrong_type_is_named(raw_params):
    raw_params["train"]["epochs"] = "ten"
    with pytest.raises(ParamsError, match=r"train\.epochs: expected int, got str 'ten'"):
        params_from_dict(raw_params)


def test_bool_is_not_an_int_but_an_int_is_a_float(raw_params):
    raw_params["train"]["lr"] = 1
    assert params_from_dict(raw_params).train.lr == 1.0
    raw_params["train"]["epochs"] = True
    with pytest.raises(ParamsError, match=r"train\.epochs: expected int"):
        params_from_dict(raw_params)


def test_list_items_and_ranges_are_checked(raw_params):
    raw_params["mapper"]["hidden"] = [512, "big"]
    with pytest.raises(ParamsError, match=r"mapper\.hidden\[1\]: expected int"):
        params_from_dict(raw_params)
    raw_params["mapper"]["hidden"] = [512, 1024]
    with pytest.raises(ParamsError, match=r"mapper\.dropout: needs one value per hidden layer"):
        params_from_dict(raw_params)


def test_missing_key_and_unknown_choice(raw_params):
    del raw_params["render"]["steps"]
    with pytest.raises(ParamsError, match=r"render\.steps: missing"):
        params_from_dict(raw_params)
    raw_params["render"]["steps"] = 4
    raw_params["data"]["source"] = "youtube"
    with pytest.raises(ParamsError, match=r"data\.source: must be one of"):
        params_from_dict(raw_params)


def test_unknown_synthetic_class_lists_the_known_ones(raw_params):
    raw_params["data"]["synthetic"]["classes"] = ["siren", "kazoo"]
    with pytest.raises(ParamsError, match=r"data\.synthetic\.classes: unknown class 'kazoo' \(known: siren"):
        build_candidates(params_from_dict(raw_params).data)


def test_bad_yaml_is_one_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert "not valid YAML" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("key,text", [("train.lr", "1e309"), ("train.w_cos", ".nan"), ("render.guidance", "-.inf"),
                                      ("download.backoff_seconds", str(10**400))])
def test_a_float_that_is_not_finite_is_named(tmp_path, key, text):
    # Before: train.lr 1e309 (YAML reads inf) passed, training logged nan, exited 0 and replaced the mapper.
    section, name = key.split(".")
    lines = (ROOT / "params.yaml").read_text().splitlines()
    start = lines.index(f"{section}:")
    at = next(i for i in range(start, len(lines)) if lines[i].strip().startswith(f"{name}:"))
    lines[at] = f"  {name}: {text}"
    (tmp_path / "params.yaml").write_text("\n".join(lines) + "\n")
    with pytest.raises(ParamsError, match=rf"^{tmp_path / 'params.yaml'}: {key}: must be a finite number, got "):
        load_params(tmp_path / "params.yaml")


@pytest.mark.parametrize("section,key,value,bound", [
    ("render", "size", 100_000, "4,096"), ("render", "steps", 10**9, "1,000"), ("render", "guidance", 1e6, "100.0"),
    ("train", "batch_size", 10**9, "65,536"), ("render", "seed", 2**70, "4,294,967,295"),
    ("train", "seed", -1, "4,294,967,295"), ("audio_encoder", "batch_size", 10**9, "65,536"),
    ("download", "workers", 10**6, "256"), ("mapper", "frames_layers", 10**6, "64"),
])
def test_an_absurd_size_is_refused_with_its_bound(raw_params, section, key, value, bound):
    # Before: size 100000, steps 1e9, batch_size 1e9 and seed 2**70 passed, and failed (or took the machine) only
    # once the models had loaded.
    raw_params[section][key] = value
    with pytest.raises(ParamsError, match=rf"^params: {section}\.{key}: must be in \[.*, {bound}\], got "):
        params_from_dict(raw_params)


def test_an_absurd_layer_width_is_named_by_its_index(raw_params):
    # Before: mapper.hidden [1e9] passed check_params and failed when train started, after every upstream stage.
    raw_params["mapper"]["hidden"] = [64, 10**9]
    raw_params["mapper"]["dropout"] = [0.1, 0.1]
    with pytest.raises(ParamsError, match=r"^params: mapper\.hidden\[1\]: must be in \[1, 65,536\], got 1,000,000,000"):
        params_from_dict(raw_params)
    raw_params["mapper"]["hidden"] = [8] * 65
    raw_params["mapper"]["dropout"] = [0.1] * 65
    with pytest.raises(ParamsError, match=r"mapper\.hidden: needs 1 to 64 layers"):
        params_from_dict(raw_params)


def _params_file(tmp_path, raw: dict):
    from ruamel.yaml import YAML

    path = tmp_path / "params.yaml"
    with open(path, "w") as f:
        YAML().dump(raw, f)
    return path


def test_loading_only_some_sections_leaves_a_mistake_elsewhere_as_a_note(tmp_path, raw_params):
    # Issue 26. Before: a failed `dvc exp run -S train.lr=fast` left lr: fast, and `a2i generate`, which reads only
    # render and generate, refused with "train.lr: expected float".
    from a2i_core.core.params import GenerateParams, load_sections

    raw_params["train"]["lr"] = "fast"
    raw_params.pop("generate", None)  # a file from before 0.2: the section's default, as load_params gives it
    path = _params_file(tmp_path, raw_params)
    sections, note = load_sections(path, ("generate", "render"))  # any order
    assert sections.render == params_from_dict({**raw_params, "train": {**raw_params["train"], "lr": 1.0}}).render
    assert sections.generate == GenerateParams()
    assert note == f"{path}: train.lr: expected float, got str 'fast'"
    raw_params["train"]["lr"] = 0.001
    assert load_sections(_params_file(tmp_path, raw_params), ("render",))[1] is None


@pytest.mark.parametrize("change", [{"steps": "many"}, {"stepz": 3}, {"size": 100}])
def test_a_mistake_in_a_loaded_section_is_load_params_own_line(tmp_path, raw_params, change):
    from a2i_core.core.params import load_sections

    raw_params["render"].update(change)
    path = _params_file(tmp_path, raw_params)
    with pytest.raises(ParamsError) as full:
        load_params(path)
    with pytest.raises(ParamsError) as part:
        load_sections(path, ("render", "generate"))
    assert str(part.value) == str(full.value) and str(full.value).startswith(f"{path}: render.")
