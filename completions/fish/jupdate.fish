complete -c jupdate -s c -l config -d 'Configuration file' -r -F
complete -c jupdate -l libxo -d 'FreeBSD\'s spelling of --json (libxo): --libxo json' -r
complete -c jupdate -s j -l jobs -d 'Jails updated at a time (1 to 256); reports still come in the order given' -r
complete -c jupdate -l log-dir -d 'Directory for <jail>.log [default: log_dir of the configuration]' -r -F
complete -c jupdate -l timeout -d 'Time limit per jail, a number and a unit (s, m, h, d, w; e.g. 30m, 6h; a number alone is refused)' -r
complete -c jupdate -s a -l all -d 'Every jail in the configuration file, in file order (none: 78, unless it sets allow_empty)'
complete -c jupdate -s q -l quiet -d 'Print only errors: no report line for what succeeded'
complete -c jupdate -s v -l verbose -d 'Say what is done, one line per action'
complete -c jupdate -l json -d 'Records as JSON Lines on stdout, one object each, instead of TAB-separated lines'
complete -c jupdate -s i -l interactive -d 'One jail only: the command gets the terminal (default command: portmaster -ai)'
complete -c jupdate -s n -l dry-run -d 'Print the run as sh commands (mount, start, update, stop, unmount); change nothing'
complete -c jupdate -s h -l help -d 'Print help (see more with \'--help\')'
complete -c jupdate -s V -l version -d 'Print version'
