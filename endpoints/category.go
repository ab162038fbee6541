package endpoints

type Category string

func classify(e *Entry) { e.Category = "other" }
