"""Visualisations of finished runs: rank lists, Grad-CAM, a model's own attention maps, activation maps, the
papers' figures as data (``paper.yaml`` ``figures:``) and the static report page. See docs/figures.md."""
