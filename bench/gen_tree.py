#!/usr/bin/env python3
"""Generate a synthetic ports-like upper dir for the jclean benchmark.

    gen_tree.py DIR FILES [SEED]

Categories of ports, each with work dirs nested several levels deep
(category/port/work/port-1.0/src/dN/...), the ports framework's dotfiles
(.build_done.*, .extract_done.*, ...), file sizes from 0 to ~900 KiB (mostly
small, a few large, as in real build trees) and a distfiles/ dir.
Deterministic for a given seed.
"""
import os
import random
import sys


def main():
    root, files = sys.argv[1], int(sys.argv[2])
    rnd = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
    zeros = bytes(900 * 1024)
    def size():
        r = rnd.random()
        if r < 0.30:
            return 0
        if r < 0.90:
            return rnd.randrange(1, 8 * 1024)
        if r < 0.99:
            return rnd.randrange(8 * 1024, 128 * 1024)
        return rnd.randrange(128 * 1024, 900 * 1024)

    made = 0
    dist = os.path.join(root, "distfiles")
    os.makedirs(dist, exist_ok=True)
    for i in range(max(1, files // 500)):
        with open(os.path.join(dist, f"dist-{i}.tar.xz"), "wb") as f:
            f.write(zeros[: size()])
        made += 1
    cats = ["devel", "lang", "www", "net", "sysutils", "textproc", "graphics", "databases"]
    port = 0
    while made < files:
        cat = cats[port % len(cats)]
        name = f"port{port}"
        work = os.path.join(root, cat, name, "work")
        src = os.path.join(work, f"{name}-1.0", "src")
        for stage in ("extract", "patch", "configure", "build"):
            open(os.path.join(mkdirs(work), f".{stage}_done.{name}._usr_local"), "w").close()
            made += 1
        per_port = rnd.randrange(50, 400)
        for d in range(rnd.randrange(3, 12)):
            sub = os.path.join(src, f"d{d}", "lib" if d % 2 else "include")
            os.makedirs(sub, exist_ok=True)
            for n in range(per_port // 6):
                if made >= files:
                    break
                with open(os.path.join(sub, f"f{n}.{'o' if n % 3 else 'c'}"), "wb") as f:
                    f.write(zeros[: size()])
                made += 1
        port += 1
    print(f"{made} files in {port} ports under {root}")


def mkdirs(p):
    os.makedirs(p, exist_ok=True)
    return p


if __name__ == "__main__":
    main()
