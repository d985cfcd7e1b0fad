# Written by decoserve-loadgen --sweep kv-bits; run with: gnuplot plots.gp
$d0 << EOD
128 1311.746
EOD
$d1 << EOD
128 1731.881
EOD
$d2 << EOD
128 1863.123
EOD
$d3 << EOD
128 2180.803
EOD
$seqs << EOD
"16" 3.125 25
"8" 5.876 47
"4" 10.751 86
"2" 16.001 128
EOD
set terminal pngcairo size 900,560 font 'sans,11'
set grid
set output 'throughput.png'
set title "llama3-8b: output tokens/s against concurrency, 8192 MiB of KV memory" noenhanced
set xlabel 'concurrency (requests in flight)'
set ylabel 'output tokens/s'
set logscale x 2
set yrange [0:*]
set key outside right top
plot $d0 using 1:2 with linespoints lw 2 pt 7 title 'kv-bits 16', \
     $d1 using 1:2 with linespoints lw 2 pt 7 title 'kv-bits 8', \
     $d2 using 1:2 with linespoints lw 2 pt 7 title 'kv-bits 4', \
     $d3 using 1:2 with linespoints lw 2 pt 7 title 'kv-bits 2'

set output 'seqs_per_gib.png'
set title "llama3-8b: peak running sequences per GiB of KV memory (most over the concurrencies)" noenhanced
unset logscale x
set xlabel 'kv-bits'
set ylabel 'peak running sequences per GiB'
set style fill solid 0.6
set boxwidth 0.6
set xrange [-0.6:3.6]
set yrange [0:*]
set offsets 0, 0, graph 0.1, 0
plot $seqs using 0:2:xtic(1) with boxes notitle, \
     $seqs using 0:2:(sprintf('%.1f/GiB (%d seqs)', $2, $3)) with labels offset 0,1 notitle
