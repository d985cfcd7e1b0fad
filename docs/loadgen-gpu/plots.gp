# Written by decoserve-loadgen --sweep kv-bits; run with: gnuplot plots.gp
$d0 << EOD
32 1019.252
128 1076.179
EOD
$d1 << EOD
32 1098.722
128 1205.606
EOD
$d2 << EOD
32 1138.126
128 1325.196
EOD
$d3 << EOD
32 1124.290
128 1316.996
EOD
$seqs << EOD
"16" 6.375 51
"8" 11.753 94
"4" 16.002 128
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
