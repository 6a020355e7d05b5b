"""The project's own test images: recipes turned into build contexts, and the catalog of builds.

:mod:`.declared` finds a project's declared test dependencies, :mod:`.generated` turns a
generated recipe into a build context (a host-filled wheelhouse + a Dockerfile), and
:mod:`.catalog` records successful builds, resolves ``@recipe`` for tiers and removes old images.
The docker side of a build lives in :mod:`runners.docker_build`; the run itself is the
``build`` tier kind (:mod:`scheduler.run.kinds.build`).
"""
