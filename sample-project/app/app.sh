#!/bin/sh
cat /etc/greeting.txt
echo "and hello from sample-app"
