"""ControlNet training on hintset shards (diffusers + transformers for the Stable Diffusion parts)."""
