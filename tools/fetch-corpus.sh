#!/usr/bin/env bash
# Fetch public-domain English text from Debian packages and extract it as plain UTF-8 into data/cache/.
#
#   tools/fetch-corpus.sh            # Austen's six novels -> data/cache/austen.txt
#   tools/fetch-corpus.sh --install  # also refresh the committed data/corpus/austen.txt.gz
#   tools/fetch-corpus.sh fortunes   # additionally the fortune quotations -> data/cache/fortunes.txt
#
# Needs only bash, apt-get/dpkg-deb, gzip and python3 (standard library). Run `apt-get update` first if
# apt-get cannot find the package. Packages are downloaded (not installed) and unpacked under
# data/cache/debs/, so none of their dependencies are pulled in.
#
# Austen: package r-cran-janeaustenr keeps each novel as an R character vector (one element per printed
# line) in the lazy-load database data/Rdata.{rdx,rdb}; tools/rdb_text.py decodes it. The novels are
# joined in publication order, separated by two blank lines.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="$root/data/cache"
debs="$cache/debs"
install=0
want_fortunes=0
for arg in "$@"; do
  case "$arg" in
    --install) install=1 ;;
    fortunes) want_fortunes=1 ;;
    austen) ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fetch-corpus: unknown argument '$arg'" >&2; exit 2 ;;
  esac
done
mkdir -p "$debs"

fetch() { # fetch PACKAGE -> unpacked tree in $debs/PACKAGE, prints the version
  local pkg="$1"
  (cd "$debs" && rm -f "${pkg}"_*.deb && apt-get download "$pkg" >/dev/null 2>&1) || {
    echo "fetch-corpus: 'apt-get download $pkg' failed (try 'apt-get update' first)" >&2; exit 1; }
  local deb
  deb="$(ls "$debs"/"${pkg}"_*.deb | head -n1)"
  rm -rf "${debs:?}/$pkg"
  dpkg-deb -x "$deb" "$debs/$pkg"
  dpkg-deb -f "$deb" Version
}

ver="$(fetch r-cran-janeaustenr)"
rdx="$debs/r-cran-janeaustenr/usr/lib/R/site-library/janeaustenr/data/Rdata.rdx"
[ -f "$rdx" ] || { echo "fetch-corpus: $rdx not found in the package" >&2; exit 1; }
python3 "$root/tools/rdb_text.py" "$rdx" "$cache/janeaustenr"
out="$cache/austen.txt.tmp"
: > "$out"
first=1
for novel in sensesensibility prideprejudice mansfieldpark emma northangerabbey persuasion; do
  f="$cache/janeaustenr/$novel.txt"
  [ -s "$f" ] || { echo "fetch-corpus: novel '$novel' missing from the package data" >&2; exit 1; }
  if [ $first -eq 0 ]; then printf '\n\n' >> "$out"; fi
  first=0
  # Strip trailing whitespace on each line and trailing blank lines of each novel.
  sed -e 's/[[:space:]]*$//' "$f" | sed -e ':a' -e '/^\n*$/{$d;N;ba' -e '}' >> "$out"
done
mv "$out" "$cache/austen.txt"
echo "austen: r-cran-janeaustenr $ver -> $cache/austen.txt ($(wc -c < "$cache/austen.txt") bytes)"

if [ $install -eq 1 ]; then
  mkdir -p "$root/data/corpus"
  gzip -9 -n -c "$cache/austen.txt" > "$root/data/corpus/austen.txt.gz.tmp"
  mv "$root/data/corpus/austen.txt.gz.tmp" "$root/data/corpus/austen.txt.gz"
  echo "installed data/corpus/austen.txt.gz ($(wc -c < "$root/data/corpus/austen.txt.gz") bytes)"
fi

if [ $want_fortunes -eq 1 ]; then
  fver="$(fetch fortunes-min)"
  dir="$debs/fortunes-min/usr/share/games/fortunes"
  : > "$cache/fortunes.txt.tmp"
  for f in "$dir"/*; do
    case "$f" in *.dat|*.u8) continue ;; esac
    [ -f "$f" ] || continue
    # Entries are separated by lines holding only '%'; turn them into blank-line separated paragraphs.
    sed -e 's/[[:space:]]*$//' -e 's/^%$//' "$f" >> "$cache/fortunes.txt.tmp"
    printf '\n' >> "$cache/fortunes.txt.tmp"
  done
  mv "$cache/fortunes.txt.tmp" "$cache/fortunes.txt"
  echo "fortunes: fortunes-min $fver -> $cache/fortunes.txt ($(wc -c < "$cache/fortunes.txt") bytes)"
fi
