# debs.sh — Debian packages fetched by `apt-get download`, kept in a cache
# folder and checked against sha256 pins (sourced by fetch-real-speech and
# compare-diarize: real recorded speech comes from Asterisk's prompt
# packages). The caller defines die() and log() and sets CACHE and
# DEB_VERSION.

sha_of() { sha256sum "$1" | awk '{print $1}'; }

# fetch_deb PACKAGE SHA256 -> prints the path of the verified .deb
fetch_deb() {
  local pkg=$1 want=$2 file got tmp
  mkdir -p "$CACHE"
  file="$CACHE/${pkg}_${DEB_VERSION}_all.deb"
  if [[ -f "$file" ]]; then
    got=$(sha_of "$file")
    if [[ "$got" == "$want" ]]; then
      echo "$file"
      return
    fi
    log "cached $file has sha256 $got, expected $want: downloading it again"
    rm -f -- "$file"
  fi
  command -v apt-get >/dev/null || die "apt-get not found; put ${pkg}_${DEB_VERSION}_all.deb (sha256 $want) in $CACHE"
  log "apt-get download $pkg=$DEB_VERSION"
  tmp=$(mktemp -d "$CACHE/.download.XXXXXX")
  if ! (cd "$tmp" && apt-get download -q "$pkg=$DEB_VERSION" >&2); then
    rm -rf -- "$tmp"
    die "apt-get download $pkg=$DEB_VERSION failed (is the Debian archive reachable and 'apt-get update' done? \
or put ${pkg}_${DEB_VERSION}_all.deb, sha256 $want, in $CACHE)"
  fi
  local got_file=("$tmp"/*.deb)
  [[ ${#got_file[@]} == 1 && -f "${got_file[0]}" ]] || { rm -rf -- "$tmp"; die "apt-get download $pkg left no single .deb"; }
  got=$(sha_of "${got_file[0]}")
  if [[ "$got" != "$want" ]]; then
    mv -f -- "${got_file[0]}" "$file.rejected"
    rm -rf -- "$tmp"
    die "sha256 mismatch for $pkg $DEB_VERSION: got $got, expected $want (kept as $file.rejected). \
The archive serves a different file than the one pinned; check it before updating the pin."
  fi
  mv -f -- "${got_file[0]}" "$file"
  rm -rf -- "$tmp"
  echo "$file"
}
