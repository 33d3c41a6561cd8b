module github.com/carpfs/carpfs

go 1.26.8
