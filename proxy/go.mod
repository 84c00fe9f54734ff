module rewind/proxy

go 1.19
