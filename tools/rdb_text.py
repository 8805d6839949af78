#!/usr/bin/env python3
"""Extract character vectors from an R lazy-load database (`Rdata.rdx` + `Rdata.rdb`) as plain text.

Python standard library only. What is parsed:

* `NAME.rdx` is a gzip-compressed R serialisation (an RDS stream) of a list whose `variables` element maps
  each object name to an integer pair (offset, length) into `NAME.rdb`.
* At that offset `NAME.rdb` holds a 4-byte big-endian uncompressed length followed by a zlib stream
  (compression type 1; types 2 and 3 add a one-byte tag 'Z'/'2'/'X' and use bzip2/xz, also handled).
* The decompressed bytes are an R serialisation in XDR (big-endian) format: "X\\n", format version (2 or 3),
  writer and reader R versions, and for version 3 the native encoding name. Each item starts with an
  int of flags: type = flags & 0xff, object bit 8, attribute bit 9, tag bit 10, and for CHARSXP the
  encoding / NA levels in the upper bits.
* Supported item types: NULL (254), reference (255), symbols (1), pairlists (2, used for attributes),
  CHARSXP strings (9, length -1 = NA), logical/integer (10/13), double (14), character vectors (16),
  generic vectors (19) and the singleton environments. That is all a data set of text lines needs;
  anything else raises an error naming the type rather than producing garbage.

Usage: rdb_text.py RDX_PATH OUT_DIR  -> writes OUT_DIR/<object>.txt, one element per line, for every
character vector in the database, and prints the names and line counts.
"""
import bz2
import gzip
import lzma
import os
import struct
import sys
import zlib


class Reader:
    def __init__(self, data):
        self.d = data
        self.p = 0
        self.refs = []

    def take(self, n):
        if self.p + n > len(self.d):
            raise ValueError("truncated R serialisation at byte %d" % self.p)
        b = self.d[self.p:self.p + n]
        self.p += n
        return b

    def int(self):
        return struct.unpack(">i", self.take(4))[0]

    def length(self):
        n = self.int()
        if n == -1:
            hi, lo = self.int(), self.int()
            n = (hi << 32) + lo
        return n

    def header(self):
        fmt = self.take(2)
        if fmt != b"X\n":
            raise ValueError("only XDR (binary big-endian) R serialisation is supported, got %r" % fmt)
        version = self.int()
        self.int()  # writer R version
        self.int()  # minimal reader R version
        if version == 3:
            self.take(self.int())  # native encoding name
        elif version != 2:
            raise ValueError("unsupported serialisation version %d" % version)

    def item(self):
        flags = self.int()
        t = flags & 0xFF
        has_attr = bool(flags & (1 << 9))
        has_tag = bool(flags & (1 << 10))
        if t == 254:  # NILVALUE
            return None
        if t in (253, 242, 241, 250, 251, 252):  # global/empty/base env, base namespace, missing, unbound
            return None
        if t == 255:  # reference to an earlier symbol/environment
            idx = flags >> 8
            if idx == 0:
                idx = self.int()
            return self.refs[idx - 1]
        if t == 1:  # SYMSXP
            name = self.item()
            self.refs.append(name)
            return name
        if t == 2:  # LISTSXP (pairlist): [attr] [tag] car cdr, iterated along the cdr
            out = {}
            while True:
                if has_attr:
                    self.item()
                tag = self.item() if has_tag else None
                out[tag if tag is not None else len(out)] = self.item()
                flags = self.int()
                t = flags & 0xFF
                if t == 254:
                    return out
                if t != 2:
                    raise ValueError("pairlist continued by type %d" % t)
                has_attr = bool(flags & (1 << 9))
                has_tag = bool(flags & (1 << 10))
        if t == 9:  # CHARSXP
            n = self.int()
            if n == -1:
                return None  # NA_character_
            raw = self.take(n)
            latin1 = bool(flags & (1 << 14)) and not bool(flags & (1 << 15))
            return raw.decode("latin-1" if latin1 else "utf-8")
        if t in (10, 13):
            n = self.length()
            val = list(struct.unpack(">%di" % n, self.take(4 * n)))
        elif t == 14:
            n = self.length()
            val = list(struct.unpack(">%dd" % n, self.take(8 * n)))
        elif t == 16:
            n = self.length()
            val = [self.item() for _ in range(n)]
        elif t == 19:
            n = self.length()
            val = [self.item() for _ in range(n)]
        else:
            raise ValueError("unsupported R item type %d at byte %d" % (t, self.p - 4))
        attrs = self.item() if has_attr else None
        if t in (16, 19):
            return RVec(t, val, attrs)
        return val


class RVec(list):
    def __init__(self, kind, items, attrs):
        super().__init__(items)
        self.kind = kind
        self.attrs = attrs or {}


def unserialize(data):
    r = Reader(data)
    r.header()
    return r.item()


def rdb_object(rdb, offset, length):
    blob = rdb[offset:offset + length]
    if len(blob) != length:
        raise ValueError("rdb entry at %d runs past the end of the file" % offset)
    n = struct.unpack(">I", blob[:4])[0]
    tag = blob[4:5]
    if tag == b"Z":
        data = zlib.decompress(blob[5:])
    elif tag == b"2":
        data = bz2.decompress(blob[5:])
    elif tag == b"X":
        data = lzma.decompress(blob[5:])
    elif tag == b"0":
        data = blob[5:]
    else:
        data = zlib.decompress(blob[4:])
    if len(data) != n:
        raise ValueError("rdb entry at %d: expected %d bytes, got %d" % (offset, n, len(data)))
    return unserialize(data)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: rdb_text.py RDX_PATH OUT_DIR")
    rdx_path, out_dir = sys.argv[1], sys.argv[2]
    rdb_path = rdx_path[:-4] + ".rdb"
    with open(rdx_path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    index = unserialize(raw)
    names = index.attrs.get("names")
    if names is None:
        sys.exit("%s: index has no names" % rdx_path)
    variables = index[list(names).index("variables")]
    with open(rdb_path, "rb") as f:
        rdb = f.read()
    os.makedirs(out_dir, exist_ok=True)
    for name, (offset, length) in zip(variables.attrs["names"], variables):
        obj = rdb_object(rdb, offset, length)
        if not (isinstance(obj, RVec) and obj.kind == 16):
            print("skip %s (not a character vector)" % name)
            continue
        lines = ["" if s is None else s for s in obj]
        with open(os.path.join(out_dir, name + ".txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        print("%s: %d lines" % (name, len(lines)))


if __name__ == "__main__":
    main()
