"""Hardware profiles: one YAML file per deployment target (runtime, shapes, threads, precisions).

``hardware_profiles.registry`` loads the built-in profiles (``builtin/*.yaml``) and user folders,
``hardware_profiles.profile`` validates one, ``hardware_profiles.hardware`` tells whether this machine
can measure it.
"""
