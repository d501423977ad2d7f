"""The app's Layers: the page's choice read into params' layers section (a hand-made value, or more layers than the
image size holds, refused in one line as a setting: the page keeps the sound), the two dropdowns there only when the
app offers layers, and, end to end on the demo's models in a real headless browser (test_app's server and browser
helpers), a hard-panned mixture drawn as layers placed by its channels, its Settings used holding the layering."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

from a2i_core.diffusion.fills import SequenceFill
from a2i_core.diffusion.images import SETTINGS_KEY, png_text
from a2i_core.diffusion.render import RenderSettings
from a2i_core.serve.app import LAYER_MODES, LAYOUTS, _layering, build_app
from a2i_core.serve.guards import SoundRefused
from a2i_core.serve.timeline_tab import SettingsRefused
from tests.serve.test_app import BROWSER_ARGS, CHROMIUM, _app, _server_file, needs_chromium

REFUSED = "Layers must be off, regions or joint, and the layout score, grid, stereo."
TOO_SMALL = "4 regions of at least 32 px (layers.min_region) do not fit in an image of 64 px: choose a larger size."


# ---- the page's choice, without a model -----------------------------------------------------------------------


@pytest.fixture
def layers(offline_params):
    """The offline profile's layers section: 4 layers of at least 32 px, so 128 px images and up."""
    cfg = offline_params.layers
    assert (cfg.max_layers, cfg.min_region) == (4, 32)
    return cfg


def test_layers_off_is_no_layering(layers):
    assert _layering(layers, "off", "stereo", 128) is None
    assert _layering(layers, "off", None, 64) is None  # off: the layout and the size are not asked about


@pytest.mark.parametrize("mode, layout", [
    ("everywhere", "score"),  # a mode the page does not offer
    (None, "score"),
    ("", "score"),
    ("Regions", "score"),
    (["regions"], "score"),
    ("regions", "../x"),  # a layout the page does not offer
    ("regions", None),
    ("joint", "STEREO"),
    ("joint", ""),
])
def test_a_value_the_page_does_not_offer_is_refused_in_one_line(layers, mode, layout):
    with pytest.raises(SettingsRefused) as err:
        _layering(layers, mode, layout, 128)
    assert str(err.value) == REFUSED
    assert not isinstance(err.value, SoundRefused)  # a setting, not the sound: the page keeps the sound


def test_more_layers_than_the_size_holds_are_refused_naming_the_size(layers):
    with pytest.raises(SettingsRefused) as err:
        _layering(layers, "regions", "stereo", 64)
    assert str(err.value) == TOO_SMALL
    assert _layering(layers, "regions", "stereo", 128) is not None  # 4 x 32: just fits


@pytest.mark.parametrize("mode", LAYER_MODES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_choice_the_page_offers_is_params_section_with_that_mode_and_layout(layers, mode, layout):
    chosen = _layering(layers, mode, layout, 256)
    assert (chosen.mode, chosen.layout) == (mode, layout)
    assert chosen == dataclasses.replace(layers, mode=mode, layout=layout)  # every other key as params has it


def _components(app) -> dict[str, dict]:
    return {c["props"]["elem_id"]: c for c in app.get_config_file()["components"] if c["props"].get("elem_id")}


def test_the_layers_dropdowns_are_shown_only_when_the_app_offers_layers(layers):
    defaults, fill = RenderSettings(4, 3.0, 128, 0, 1), SequenceFill("empty_prompt")
    grid = dataclasses.replace(layers, layout="grid")
    offered, plain = build_app(None, defaults, fill, layers=grid), build_app(None, defaults, fill)
    for app, shown in [(offered, True), (plain, False)]:
        items = _components(app)
        for name in ("layers", "layout"):
            row = _row_of(app, items[name]["id"])
            assert row["props"].get("visible", True) is shown, (name, row)
    items = _components(offered)
    assert [c[0] for c in items["layers"]["props"]["choices"]] == ["off", "regions", "joint"]
    assert [c[0] for c in items["layout"]["props"]["choices"]] == ["score", "grid", "stereo"]
    assert items["layers"]["props"]["value"] == "off"  # one embedding unless the visitor asks
    assert items["layout"]["props"]["value"] == "grid"  # params' layers.layout


def _row_of(app, component: int) -> dict:
    """The innermost row holding ``component`` (Gradio puts a form between them)."""
    config = app.get_config_file()
    by_id = {c["id"]: c for c in config["components"]}
    parents: dict[int, int] = {}
    nodes = [config["layout"]]
    while nodes:
        node = nodes.pop()
        for child in node.get("children", []):
            parents[child["id"]] = node["id"]
            nodes.append(child)
    parent = by_id[parents[component]]
    while parent["type"] != "row":
        parent = by_id[parents[parent["id"]]]
    return parent


# ---- end to end, on the demo's models -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(demo_workspace, tmp_path_factory):
    """`a2i app` on the demo's project (its params.yaml has a layers section, its models a label head)."""
    server = _app(demo_workspace[0], tmp_path_factory.mktemp("layers-app"), "--no-examples")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def panned(demo_workspace) -> tuple[Path, str, str]:
    """A hard-panned two-source mixture of the demo's: (its file, the left sound's prompt, the right sound's)."""
    folder = demo_workspace[0] / "data" / "mixtures"
    table = pd.read_csv(folder / "mixtures.csv", keep_default_na=False)
    row = table[table["panned"].astype(str) == "True"].iloc[0]
    assert row["file"].startswith("pan-"), row
    return folder / row["file"], row["first"], row["second"]


def _choose(page, name: str, value: str) -> None:
    """Pick ``value`` in the dropdown labelled ``name``, as a visitor does: open it, click the option."""
    page.get_by_label(name, exact=True).click()
    page.get_by_role("option", name=value, exact=True).click()


def _settings(page, image) -> tuple[dict, dict]:
    """The Settings used as the page's Copy button gives them (its tree view folds the layers away), and as the
    shown image's PNG text holds them (the server runs on this machine: read where the page's link points)."""
    page.locator("#settings").get_by_role("button", name="Copy").click()
    shown = json.loads(page.evaluate("navigator.clipboard.readText()"))
    return shown, json.loads(png_text(_server_file(image.get_attribute("src")))[SETTINGS_KEY])


@needs_chromium
def test_a_panned_mixture_drawn_as_layers_placed_by_its_channels_in_the_browser(server, panned):
    """Layers regions, Layout stereo: a size too small for params' regions is one line under Generate, the sound
    kept; at the next size the settings used hold the layering, each sound on its channel's side; Layers off again,
    the same kept sound: no layering."""
    playwright = pytest.importorskip("playwright.sync_api")
    path, left, right = panned
    assert "offers no layers" not in server.console(), server.console()[-2000:]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        context = browser.new_context()
        context.grant_permissions(["clipboard-read", "clipboard-write"])  # the Settings' Copy button
        page = context.new_page()
        page.goto(server.url)
        sound, status = page.locator("#sound [data-testid=download-link]"), page.locator("#status")
        page.locator("#sound input[type=file]").set_input_files(str(path))
        sound.wait_for(state="attached", timeout=60_000)
        uploaded = _server_file(sound.get_attribute("href"))
        _choose(page, "Layers", "regions")
        _choose(page, "Layout", "stereo")
        _choose(page, "Size", "64")  # offered, but too small for params' 4 regions of 32 px
        page.get_by_role("button", name="Generate").click()
        playwright.expect(status).to_have_text(f"⚠️ {TOO_SMALL}", timeout=60_000)
        # A setting refused, not the sound: kept for another try, no new upload.
        assert (sound.count(), uploaded.is_file()) == (1, True)

        _choose(page, "Size", "128")
        page.get_by_role("button", name="Generate").click()
        image = page.locator("#result img").first
        image.wait_for(state="visible", timeout=180_000)  # a liveness bound, not a speed target
        layered = _settings(page, image)
        first = image.get_attribute("src")

        _choose(page, "Layers", "off")
        page.get_by_role("button", name="Generate").click()
        playwright.expect(image).not_to_have_attribute("src", first, timeout=180_000)
        plain = _settings(page, image)
        hidden = status.is_hidden()
        errors = page.get_by_text("Error", exact=True).count()
        browser.close()

    shown, used = layered
    assert shown == used  # the page shows the settings the PNG holds
    layering = used["layering"]
    assert layering["mode"] in ("regions", "single") and layering["layout"] == "stereo", layering
    assert layering["answer"] == "head"  # the demo's params: the label head finds the sounds
    assert layering["layers"] and all(set(layer) >= {"label", "score", "x", "y"} for layer in layering["layers"])
    places = {layer["label"]: layer["x"] for layer in layering["layers"]}
    assert len(places) == len(layering["layers"]) >= (2 if layering["mode"] == "regions" else 1), layering
    if {left, right} <= set(places):  # both heard: each where its channel puts it
        assert places[left] < 0.5 < places[right], places
    shown, used = plain
    assert shown == used and "layering" not in used, used
    assert {k: v for k, v in layered[1].items() if k not in ("layering", "render_seconds")} == {
        k: v for k, v in used.items() if k != "render_seconds"}  # nothing else differs
    assert errors == 0 and hidden
    assert "Traceback" not in server.console()

