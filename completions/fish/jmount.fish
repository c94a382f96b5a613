complete -c jmount -s c -l config -d 'Configuration file' -r -F
complete -c jmount -l libxo -d 'FreeBSD\'s spelling of --json (libxo): --libxo json' -r
complete -c jmount -l layer -d 'Only layer NAME of each jail, with the layers nested inside it; repeatable' -r
complete -c jmount -s a -l all -d 'Every jail in the configuration file, in file order (none: 78, unless it sets allow_empty)'
complete -c jmount -s q -l quiet -d 'Print only errors: no report line for what succeeded'
complete -c jmount -s v -l verbose -d 'Say what is done, one line per action'
complete -c jmount -l status -d 'Show how each layer stands instead; exit 0 if all are mounted, else 1'
complete -c jmount -s n -l dry-run -d 'Print the sh commands that would do it (runnable: pipe them to sh); change nothing'
complete -c jmount -l json -d 'Say per layer what was done (--status: its state), as JSON Lines on stdout'
complete -c jmount -s h -l help -d 'Print help (see more with \'--help\')'
complete -c jmount -s V -l version -d 'Print version'
