complete -c jclean -s c -l config -d 'Configuration file' -r -F
complete -c jclean -l libxo -d 'FreeBSD\'s spelling of --json (libxo): --libxo json' -r
complete -c jclean -l only -d 'Prune only entries of KIND (new, copy, modified, stale, conflict, whiteout), e.g. \'stale\': copies the jail never wrote of host files changed since; repeatable' -r
complete -c jclean -l keep -d 'Keep paths matching GLOB, relative to the upper dir (e.g. \'distfiles/**\'), with their parents; repeatable' -r
complete -c jclean -l older-than -d 'Only remove entries not modified for AGE, a number and a unit (s, m, h, d, w; e.g. 12h, 7d; a number alone is refused)' -r
complete -c jclean -s j -l jobs -d 'Worker threads, 1 to 256 [default: all cores]' -r
complete -c jclean -l layer -d 'Only layer NAME of each jail, with the layers nested inside it; repeatable' -r
complete -c jclean -s a -l all -d 'Every jail in the configuration file, in file order (none: 78, unless it sets allow_empty)'
complete -c jclean -s q -l quiet -d 'Print only errors: no report line for what succeeded'
complete -c jclean -s v -l verbose -d 'Say what is done, one line per action'
complete -c jclean -l json -d 'Records as JSON Lines on stdout, one object each, instead of TAB-separated lines'
complete -c jclean -l list -d 'List every entry of each upper dir with what it is to the host tree: JAIL, LAYER, KIND (new, copy, modified, stale, conflict, whiteout, opaque, dir, newdir), SIZE, PATH (relative to the layer\'s tree), sorted by path; deletes nothing (implies -n), so mounted layers too'
complete -c jclean -l absolute -d 'With --list: PATH is the entry\'s path in the upper dir, not relative to the layer\'s tree'
complete -c jclean -s b -l bytes -d 'Exact byte counts instead of human sizes'
complete -c jclean -l remount -d 'The weekly clean, per jail and all or nothing: stop the jail if it runs (FreeBSD), take its layers down, prune, mount again what was mounted, start what was stopped; a busy jail is skipped (75, holders named)'
complete -c jclean -s n -l dry-run -d 'Count only: report what would be freed; delete nothing'
complete -c jclean -s h -l help -d 'Print help (see more with \'--help\')'
complete -c jclean -s V -l version -d 'Print version'
