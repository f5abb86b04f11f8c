#!/usr/bin/env python3
"""Writes an uncompressed initramfs (newc cpio) of a few executables.

usage: initramfs.py OUT NAME=PATH...   e.g. initramfs.py initrd init=./init

Each NAME (a file in the root, mode 0755) gets the contents of PATH. The
archive also holds /dev/console (char 5,1: the kernel opens it as init's
stdin, stdout and stderr) and empty /proc and /tmp (mode 1777, for
os.TempDir). Uncompressed, since every cycle the guest spends
decompressing it is emulated.
"""
import stat
import sys


def entry(out, ino, name, mode, data=b"", rdev=(0, 0)):
    name = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, 0, len(data),
              0, 0, rdev[0], rdev[1], len(name), 0)
    hdr = b"070701" + b"".join(b"%08x" % f for f in fields) + name
    out.write(hdr + b"\0" * (-len(hdr) % 4))
    out.write(data + b"\0" * (-len(data) % 4))


def main():
    if len(sys.argv) < 3 or not all("=" in a for a in sys.argv[2:]):
        sys.exit(__doc__)
    with open(sys.argv[1], "wb") as out:
        entry(out, 1, "dev", stat.S_IFDIR | 0o755)
        entry(out, 2, "dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
        entry(out, 3, "proc", stat.S_IFDIR | 0o755)
        entry(out, 4, "tmp", stat.S_IFDIR | 0o1777)
        for ino, arg in enumerate(sys.argv[2:], 5):
            name, path = arg.split("=", 1)
            with open(path, "rb") as f:
                entry(out, ino, name.lstrip("/"), stat.S_IFREG | 0o755, f.read())
        entry(out, 0, "TRAILER!!!", 0)
        out.write(b"\0" * (-out.tell() % 512))


if __name__ == "__main__":
    main()
