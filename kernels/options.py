"""The op's option values, in one place (no imports: ``monarch_convert.config`` reads them without
loading torch)."""

PAD_TYPES = ("post", "pre")
BACKENDS = ("auto", "torch", "triton")
