"""Pure rendering: spec + credentials → configuration files and Kubernetes objects.

Nothing here performs I/O; each renderer returns data, and the data carries its hash.
"""

from sotadb.render.objects import Images, render_objects

__all__ = ["Images", "render_objects"]
