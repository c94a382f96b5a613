complete -c junmount -s c -l config -d 'Configuration file [default: $JLAYERS_CONF, else /etc/jlayers.conf on Linux, /usr/local/etc/jlayers.conf on FreeBSD]' -r -F
complete -c junmount -l libxo -d 'FreeBSD\'s spelling of --json (libxo): --libxo json' -r
complete -c junmount -s a -l all -d 'Every jail in the configuration file, in file order'
complete -c junmount -s n -l dry-run -d 'Print what would be done; change nothing'
complete -c junmount -s q -l quiet -d 'Print only errors: no report line for what succeeded'
complete -c junmount -s v -l verbose -d 'Say what is done, one line per action'
complete -c junmount -l json -d 'Records as JSON Lines on stdout, one object each, instead of TAB-separated lines'
complete -c junmount -s f -l force -d 'Unmount even if the jail is running, and force busy mounts off (umount -f on FreeBSD, lazy detach on Linux)'
complete -c junmount -s h -l help -d 'Print help'
complete -c junmount -s V -l version -d 'Print version'
