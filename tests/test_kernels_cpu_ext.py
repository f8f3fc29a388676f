"""parrot_kernels.cpu_shared_prefix: the compiled CPU decode against the reference, its shape
errors, the inputs it hands back to the torch path, and its build guard. Skipped (with the
reason) where the extension cannot be built (no C++ compiler or ninja)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from parrot_kernels import cpu_shared_prefix, pad_ragged, reference_attention
from parrot_kernels import shared_prefix as torch_path
from parrot_kernels.extension import DISABLE_ENV, CppExtension

TOL = 1e-5


@pytest.fixture(scope="module")
def ext():
    """The compiled module (built once per machine; about 35 s the first time)."""
    if not cpu_shared_prefix.load():
        pytest.skip(f"CPU extension unavailable: {cpu_shared_prefix.unavailable_reason()}")
    return cpu_shared_prefix._EXTENSION.module


def _make(seed, p_len, hkv, group, d, s_lens, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(dtype)

    q = [rnd(1, hkv * group, d) for _ in s_lens]
    sk = [rnd(s, hkv, d) for s in s_lens]
    sv = [rnd(s, hkv, d) for s in s_lens]
    return q, rnd(p_len, hkv, d), rnd(p_len, hkv, d), sk, sv


def _max_err(got: torch.Tensor, want: list[torch.Tensor]) -> float:
    return (got.unsqueeze(1) - torch.stack(want)).abs().max().item()


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    p_len=st.one_of(st.just(1), st.integers(1, 300)),
    hd=st.tuples(st.integers(1, 3), st.sampled_from([1, 2, 3, 4])),
    d=st.sampled_from([1, 4, 8, 16, 32, 64]),
    s_lens=st.lists(st.integers(0, 12), min_size=1, max_size=6),
    ragged=st.booleans(),
)
def test_decode_matches_reference(ext, seed, p_len, hd, d, s_lens, ragged):
    hkv, group = hd
    if not ragged:  # every request has the same suffix length: no lengths passed
        s_lens = [max(max(s_lens), 1)] * len(s_lens)
    q, pk, pv, sk, sv = _make(seed, p_len, hkv, group, d, s_lens)
    qd = torch.cat(q)
    skp, lens = pad_ragged(sk)
    svp, _ = pad_ragged(sv)
    lens = lens if ragged else None
    out = ext.decode(qd, pk, pv, skp, svp, lens, None)
    if skp.shape[1] == 0:  # no suffix at all: not covered, the torch path runs
        assert out is None
        out = cpu_shared_prefix.shared_prefix_decode(qd, pk, pv, skp, svp, lens)
    want = reference_attention(q, pk, pv, sk, sv)
    assert out.shape == qd.shape and out.dtype == torch.float32
    assert _max_err(out, want) <= TOL


def test_public_function_takes_the_extension(ext, monkeypatch):
    # Engine-like inputs: the prefix a view of a pool, int32 lengths, an explicit scale.
    q, pk, pv, sk, sv = _make(1, 40, 3, 3, 64, [5, 2, 7])
    pool_k, pool_v = torch.cat([torch.zeros(3, 3, 64), pk]), torch.cat([torch.zeros(3, 3, 64), pv])
    skp, lens = pad_ragged(sk)
    svp, _ = pad_ragged(sv)
    calls = []

    def spy(*args):
        calls.append(1)
        return ext.decode(*args)

    monkeypatch.setattr(cpu_shared_prefix._EXTENSION, "module", SimpleNamespace(decode=spy))
    args = (torch.cat(q), pool_k[3:], pool_v[3:], skp, svp, lens.int())
    got = cpu_shared_prefix.shared_prefix_decode(*args, scale=0.2)
    assert calls == [1]
    want = reference_attention(q, pk, pv, sk, sv, scale=0.2)
    assert _max_err(got, want) <= TOL
    assert torch.allclose(got, torch_path.shared_prefix_decode(*args, scale=0.2), atol=1e-6)


def test_inputs_it_does_not_cover_take_the_torch_path(ext):
    q, pk, pv, sk, sv = _make(2, 9, 2, 2, 8, [3, 1])
    qd = torch.cat(q)
    skp, lens = pad_ragged(sk)
    svp, _ = pad_ragged(sv)
    want = reference_attention(q, pk, pv, sk, sv)
    # fp64, an empty prefix: the module says "not mine"; the public function still answers.
    assert (
        ext.decode(qd.double(), pk.double(), pv.double(), skp.double(), svp.double(), lens, None)
        is None
    )
    d64 = [x.double() for x in (qd, pk, pv, skp, svp)]
    got = cpu_shared_prefix.shared_prefix_decode(*d64, lens)
    assert got.dtype == torch.float64 and _max_err(got.float(), want) <= TOL
    assert ext.decode(qd, pk[:0], pv[:0], skp, svp, lens, None) is None
    got = cpu_shared_prefix.shared_prefix_decode(qd, pk[:0], pv[:0], skp, svp, lens)
    assert _max_err(got, reference_attention(q, pk[:0], pv[:0], sk, sv)) <= TOL
    # Lists of suffixes, lengths as a list.
    assert _max_err(cpu_shared_prefix.shared_prefix_decode(qd, pk, pv, sk, sv), want) <= TOL
    got = cpu_shared_prefix.shared_prefix_decode(qd, pk, pv, skp, svp, lens.tolist())
    assert _max_err(got, want) <= TOL
    # Autograd is the torch path's.
    qg = qd.clone().requires_grad_()
    assert ext.decode(qg, pk, pv, skp, svp, lens, None) is None


def test_shape_errors_match_the_torch_path(ext):
    q, pk, pv, sk, sv = _make(0, 4, 2, 2, 8, [1, 2])
    qd = torch.cat(q)
    skp, lens = pad_ragged(sk)
    svp, _ = pad_ragged(sv)
    bad = [
        ("multiple", (qd[:, :3], pk, pv, skp, svp, None)),
        ("head_dim", (qd[..., :4], pk, pv, skp, svp, None)),
        ("differ", (qd, pk, pv[:3], skp, svp, None)),
        ("requests", (qd, pk, pv, skp[:1], svp[:1], None)),
        ("lengths", (qd, pk, pv, skp, svp, torch.tensor([1, 2, 3]))),
        ("B, Hq, D", (qd[None], pk, pv, skp, svp, None)),
    ]
    for match, args in bad:
        for fn in (cpu_shared_prefix.shared_prefix_decode, torch_path.shared_prefix_decode):
            if match == "B, Hq, D" and fn is torch_path.shared_prefix_decode:
                continue  # the torch path reports a 4-D q differently
            with pytest.raises(ValueError, match=match):
                fn(*args)


def _fresh(extension: CppExtension) -> CppExtension:
    """The same extension as a new, not yet loaded object (as in a new process)."""
    return CppExtension(extension.name, [s.name for s in extension.sources], extension.what)


def test_turned_off_by_environment(monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, "0")
    ext = _fresh(cpu_shared_prefix._EXTENSION)
    assert ext.load() is None and "PARROT_CPU_EXTENSION=0" in ext.error


@pytest.mark.timeout(300)
def test_a_stale_build_lock_does_not_hang_the_load(ext):
    # A process killed mid-build leaves torch's lock file; torch alone would wait on it forever.
    fresh = _fresh(cpu_shared_prefix._EXTENSION)
    lock = fresh._build_dir() / "lock"
    lock.touch()
    assert fresh.load() is not None, fresh.error
    assert not lock.exists()
