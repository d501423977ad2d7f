"""The web app: upload or record a sound, get an image, the nearest prompts and the settings used (Gradio)."""

from __future__ import annotations

import os
from pathlib import Path

from a2i_core.errors import A2IError
from a2i_core.generate import SoundToImage
from a2i_core.render import RenderSettings

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves the machine


def build_app(generator: SoundToImage, defaults: RenderSettings, sequence_fill: str):
    import gradio as gr

    def run(audio: str | None, steps: int, guidance: float, seed: int, size: int):
        if not audio:
            raise gr.Error("Upload or record a sound first.")
        settings = RenderSettings(int(steps), float(guidance), int(size), int(seed), batch_size=1)
        try:
            (sound,) = generator.sounds([Path(audio)])
            seconds = generator.render([sound], settings, images_per_sound=1, sequence_fill=sequence_fill)
        except A2IError as err:
            raise gr.Error(str(err)) from None
        nearest = [[prompt, round(score, 4)] for prompt, score in sound.nearest]
        used = {"steps": settings.steps, "guidance": settings.guidance, "seed": settings.seed, "size": settings.size,
                "sequence_fill": sequence_fill, "device": str(generator.device),
                "render_seconds": round(seconds, 2)}
        return sound.images[0], nearest, used

    with gr.Blocks(title="a2i: sound to image") as app:
        gr.Markdown("# a2i — turn a sound into an image\nA frozen Stable Diffusion 3, steered by your audio.")
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Sound")
                steps = gr.Slider(1, 100, value=defaults.steps, step=1, label="Steps")
                guidance = gr.Slider(0, 15, value=defaults.guidance, step=0.5, label="Guidance")
                seed = gr.Number(value=defaults.seed, precision=0, label="Seed")
                size = gr.Dropdown([64, 128, 256, 512, 768, 1024], value=defaults.size, label="Size")
                button = gr.Button("Generate", variant="primary")
            with gr.Column():
                image = gr.Image(type="pil", format="png", label="Image", elem_id="result")
                nearest = gr.Dataframe(headers=["nearest prompt", "cosine"], label="Nearest prompts",
                                       elem_id="nearest")
                used = gr.JSON(label="Settings used", elem_id="settings")
        button.click(run, [audio, steps, guidance, seed, size], [image, nearest, used])
    return app
