"""The ground floor: small helpers every other sub-package may use, importing nothing else of ``ctxir``.

* :mod:`ctxir.core.io` — atomic file writes (temporary name in the same folder, then rename);
* :mod:`ctxir.core.surface` — area-uniform surface sampling and the face-majority label rule;
* :mod:`ctxir.core.palette` — the class colour palette (no matplotlib needed);
* :mod:`ctxir.core.memory` — keep freed memory in the process (glibc), which makes CPU training steps faster.
"""
