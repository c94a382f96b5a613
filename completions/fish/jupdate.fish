complete -c jupdate -s c -l config -d 'Configuration file [default: $JLAYERS_CONF, else /etc/jlayers.conf on Linux, /usr/local/etc/jlayers.conf on FreeBSD]' -r -F
complete -c jupdate -l libxo -d 'FreeBSD\'s spelling of --json (libxo): --libxo json' -r
complete -c jupdate -s j -l jobs -d 'Jails updated at a time (1 to 256)' -r
complete -c jupdate -l log-dir -d 'Directory for <jail>.log [default: log_dir of the configuration]' -r -F
complete -c jupdate -l timeout -d 'Time limit per jail: a number and a unit, s, m, h, d or w (e.g. 30m, 6h); the command\'s process group is killed' -r
complete -c jupdate -s a -l all -d 'Every jail in the configuration file, in file order'
complete -c jupdate -s q -l quiet -d 'Print only errors'
complete -c jupdate -s v -l verbose -d 'Say what is done, one line per action'
complete -c jupdate -l json -d 'Records as JSON Lines on stdout, one object each, instead of TAB-separated lines'
complete -c jupdate -s i -l interactive -d 'One jail only: the command gets the terminal (default command: portmaster -ai)'
complete -c jupdate -s n -l dry-run -d 'Print what would be done; change nothing'
complete -c jupdate -s h -l help -d 'Print help'
complete -c jupdate -s V -l version -d 'Print version'
