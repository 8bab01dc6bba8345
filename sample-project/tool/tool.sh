#!/bin/sh
echo "sample-tool says hi"
