complete -c junmount -s c -l config -d 'Configuration file' -r -F
complete -c junmount -l libxo -d 'FreeBSD\'s spelling of --json (libxo): --libxo json' -r
complete -c junmount -l layer -d 'Only layer NAME of each jail, with the layers nested inside it; repeatable' -r
complete -c junmount -s a -l all -d 'Every jail in the configuration file, in file order (none: 78, unless it sets allow_empty)'
complete -c junmount -s q -l quiet -d 'Print only errors: no report line for what succeeded'
complete -c junmount -s v -l verbose -d 'Say what is done, one line per action'
complete -c junmount -s f -l force -d 'Unmount even if the jail is running, and force busy mounts off (umount -f on FreeBSD, lazy detach on Linux)'
complete -c junmount -s n -l dry-run -d 'Print the sh commands that would do it (runnable: pipe them to sh); change nothing'
complete -c junmount -l json -d 'Say per layer what was done, as JSON Lines on stdout'
complete -c junmount -s h -l help -d 'Print help (see more with \'--help\')'
complete -c junmount -s V -l version -d 'Print version'
