"""LZF decompression, the codec of PCD ``binary_compressed`` bodies."""

from __future__ import annotations

#: LZF's best case: a 3-byte back reference yields 264 bytes, so a block expands at most 88x.
LZF_MAX_EXPANSION = 88


def lzf_decompress(data: bytes, expected_size: int) -> bytes:
    """Decompress an LZF block (the codec of PCD ``binary_compressed``).

    Args:
        data: compressed bytes.
        expected_size: size of the decompressed payload, as stored in the PCD body.

    Raises:
        ValueError: the stream is malformed, does not decompress to ``expected_size`` bytes, or
            ``expected_size`` is more than ``data`` can expand to (refused before allocating).
    """
    if expected_size > LZF_MAX_EXPANSION * len(data) + 2:
        raise ValueError(
            f"{len(data)} compressed bytes cannot expand to {expected_size} bytes (LZF expands at "
            f"most {LZF_MAX_EXPANSION}x)"
        )
    out = bytearray(expected_size)
    in_pos = 0
    out_pos = 0
    n = len(data)
    while in_pos < n:
        ctrl = data[in_pos]
        in_pos += 1
        if ctrl < 32:  # literal run of ctrl + 1 bytes
            run = ctrl + 1
            if in_pos + run > n or out_pos + run > expected_size:
                raise ValueError("literal run past the end of the LZF stream")
            out[out_pos : out_pos + run] = data[in_pos : in_pos + run]
            in_pos += run
            out_pos += run
        else:  # back reference
            length = ctrl >> 5
            if length == 7:
                if in_pos >= n:
                    raise ValueError("truncated LZF back reference")
                length += data[in_pos]
                in_pos += 1
            if in_pos >= n:
                raise ValueError("truncated LZF back reference")
            ref = out_pos - ((ctrl & 0x1F) << 8) - data[in_pos] - 1
            in_pos += 1
            length += 2
            if ref < 0 or out_pos + length > expected_size:
                raise ValueError("LZF back reference outside the output")
            if ref + length <= out_pos:  # no overlap: one slice copy
                out[out_pos : out_pos + length] = out[ref : ref + length]
            else:  # overlapping run-length repeat: byte by byte
                for k in range(length):
                    out[out_pos + k] = out[ref + k]
            out_pos += length
    if out_pos != expected_size:
        raise ValueError(f"LZF stream decompressed to {out_pos} bytes, expected {expected_size}")
    return bytes(out)
