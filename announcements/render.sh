#!/usr/bin/env bash
# Render the stock prompts into 8 kHz mono 16-bit WAV, reproducibly.
#
#   announcements/render.sh           (re)write the shipped .wav files
#   announcements/render.sh --check   render into a temp dir and compare, byte for byte
#
# The prompts are package data, in mediacore/data/announcements/, so that an
# installed wheel carries them; this directory keeps how they are made.
#
# Needs espeak-ng and sox (Debian: apt-get install -y espeak-ng sox). Output
# is deterministic for given espeak-ng and sox versions: espeak-ng has no
# randomness, and sox runs with -R (fixed seeds) and -D (no dither, so no
# noise at all). Other versions may produce slightly different audio, which
# --check reports; the committed files are the reference.
set -euo pipefail
shipped="$(cd "$(dirname "$0")/../mediacore/data/announcements" && pwd)"
out="$shipped"
check=0
if [[ "${1:-}" == "--check" ]]; then
    check=1
    out="$(mktemp -d)"
    trap 'rm -rf "$out"' EXIT
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [--check]" >&2
    exit 2
fi
for tool in espeak-ng sox; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install -y $tool" >&2; exit 1; }
done

voice="en-us"   # espeak-ng voice
speed=150       # words per minute: slower than espeak's 175, for a phone line

# speak NAME TEXT: synthesise (22.05 kHz), resample to 8 kHz with sox's
# very-high-quality rate, normalise to -6 dBFS peak, and add a short lead-in
# and tail so the first syllable is not clipped by a receiver's jitter buffer.
speak() {
    local name="$1" text="$2" tmp
    tmp="$(mktemp --suffix .wav)"
    espeak-ng -v "$voice" -s "$speed" -w "$tmp" "$text"
    sox -R -D "$tmp" -r 8000 -c 1 -b 16 -e signed-integer "$out/$name.wav" \
        remix - rate -v 8000 norm -6 pad 0.15 0.25
    rm -f "$tmp"
}

speak recording-notice "This call may be recorded."
speak voicemail-greeting "Please leave a message after the tone. Press hash when you are done."

# The tone before a voicemail: 1 kHz, 300 ms, at -6 dBFS, with 10 ms
# half-sine fades so it does not click.
sox -R -D -n -r 8000 -c 1 -b 16 -e signed-integer "$out/beep.wav" \
    synth 0.3 sine 1000 vol 0.5 fade h 0.01 0.3 0.01

if (( check )); then
    status=0
    for f in "$out"/*.wav; do
        name="$(basename "$f")"
        if cmp -s "$f" "$shipped/$name"; then
            echo "ok       $name"
        else
            echo "DIFFERS  $name" >&2
            status=1
        fi
    done
    exit $status
fi
ls -l "$out"/*.wav
