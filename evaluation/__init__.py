"""``hintset evaluate``: does a ControlNet obey its maps? Generate from each condition (or take
images generated elsewhere), re-annotate with the dataset's own annotator, compare, report.

Modules: ``score`` (metrics per map kind), ``samples`` (conditions from a built dataset),
``judge`` (the dataset's annotator, re-created from its manifest), ``generate`` (diffusers
pipelines per family, resumable), ``quality`` (CLIP score, FID/KID when weights exist),
``report`` (summary.json, samples.csv, report.html), ``run`` (the whole evaluation).
A top-level package because it uses all three others: annotators (the judge), pipeline (the
manifest) and training (the bases); ``training`` itself must not know how shards were made.
"""
