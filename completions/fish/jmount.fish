complete -c jmount -s c -l config -d 'Configuration file [default: $JLAYERS_CONF, else /etc/jlayers.conf on Linux, /usr/local/etc/jlayers.conf on FreeBSD]' -r -F
complete -c jmount -l libxo -d 'FreeBSD\'s spelling of --json (libxo): --libxo json' -r
complete -c jmount -s a -l all -d 'Every jail in the configuration file, in file order'
complete -c jmount -s n -l dry-run -d 'Print what would be done; change nothing'
complete -c jmount -s q -l quiet -d 'Print only errors: no report line for what succeeded'
complete -c jmount -s v -l verbose -d 'Say what is done, one line per action'
complete -c jmount -l json -d 'Records as JSON Lines on stdout, one object each, instead of TAB-separated lines'
complete -c jmount -l status -d 'Show each layer\'s state instead, one line each: JAIL, LAYER, STATE (mounted, unmounted, partial, foreign), TARGET; exit 0 when every layer shown is mounted as configured, 1 otherwise. Takes no lock, changes nothing'
complete -c jmount -s h -l help -d 'Print help'
complete -c jmount -s V -l version -d 'Print version'
