"""``python -m calex_steps.backbones --list-attach-points ARCH``: the attach points of a
backbone (a short alias of ``python -m calex_steps.models.backbones``)."""

from calex_steps.models.attach_points import main

if __name__ == "__main__":
    raise SystemExit(main())
