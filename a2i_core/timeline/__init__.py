"""A recording over time: per-window labels smoothed into events (a timeline, as CSV and WebVTT), one keyframe per
event (a storyboard), and a film whose conditioning moves from keyframe to keyframe with the audio muxed in; and the
evaluation recordings and sound-event metrics of the timeline stage.

May import: core, audio, diffusion, mapper.
"""
