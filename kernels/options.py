"""The op's option values, in one place (no imports: ``monarch_convert.config`` reads them without
loading torch)."""

PAD_TYPES = ("post", "pre")
BACKENDS = ("auto", "torch", "triton")

# The largest block size a call or a config accepts: what an int64 holds (torch.library's ``int``,
# the kernels' launch arguments). Any larger block is the same as b = N anyway (each call caps b at
# its sequence length, ``layout.capped_block_size``), so only unrepresentable values are refused.
MAX_BLOCK_SIZE = 2**63 - 1
