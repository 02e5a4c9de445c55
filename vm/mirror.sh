#!/bin/sh
# Print the Debian mirror that apt on this machine uses for bookworm (deb822 .sources files
# first, then one-line sources.list entries), read at run time: nothing here names a host.
set -eu
suite=${1:-bookworm}
for file in /etc/apt/sources.list.d/*.sources; do
    [ -f "$file" ] || continue
    # Stanzas are separated by blank lines; take the first whose Suites name $suite exactly.
    found=$(awk -v suite="$suite" '
        BEGIN { RS = ""; FS = "\n" }
        {
            uri = ""; ok = 0
            for (i = 1; i <= NF; i++) {
                if ($i ~ /^URIs:/) { split($i, w, /[ \t]+/); uri = w[2] }
                if ($i ~ /^Suites:/) { n = split($i, w, /[ \t]+/); for (j = 2; j <= n; j++) if (w[j] == suite) ok = 1 }
            }
            if (ok && uri != "") { print uri; exit }
        }' "$file")
    if [ -n "$found" ]; then echo "$found"; exit 0; fi
done
for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$file" ] || continue
    found=$(awk -v suite="$suite" '$1 == "deb" {
        i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
        if ($(i + 1) == suite) { print $i; exit } }' "$file")
    if [ -n "$found" ]; then echo "$found"; exit 0; fi
done
echo "no Debian $suite mirror in /etc/apt/sources.list*: add one (apt's own sources)" >&2
exit 1
