"""An emulated AArch64 board: a Debian arm64 root run under QEMU user-mode emulation, serving TVM RPC.

``root`` builds the root once (debootstrap, then TVM's aarch64 wheels), ``emulation`` checks and
registers QEMU with binfmt_misc, ``server`` starts a local tracker and the board's RPC server and
stops them, ``commands`` is ``python -m dlas_dse board``. Everything here uses the standard library
only, so building the root needs neither TVM nor PyTorch.
"""
