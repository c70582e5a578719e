package main

func main() { println("serve") }
