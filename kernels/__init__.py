"""Attention kernels for Parrot (imported as ``parrot_kernels``)."""
